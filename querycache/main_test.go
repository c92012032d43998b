package querycache_test

import (
	"os"
	"testing"

	"github.com/pgcache/pgcache/pgcachetest"
)

func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }
