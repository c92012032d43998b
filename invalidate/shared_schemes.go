package invalidate

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/querycache"
)

// SharedSchemes is the scheme registry of instances that share a cache through
// Redis, where one elected instance consumes the change stream for all: every
// instance must be able to rely on the consumer computing the row tags of the
// schemes its entries use.
//
// An instance adds a scheme to a Redis hash as pending. The consumer adopts pending
// schemes between two transactions, so that every transaction after a known
// watermark is tagged with them, and writes that watermark back as the scheme's
// activeFrom. An instance uses a scheme's row tags only for entries stamped at or
// after activeFrom; until it has seen activeFrom its entries take the relation's
// wide tag, which every change invalidates. A new consumer (failover) adopts every
// scheme in the hash before it applies anything.
type SharedSchemes struct {
	client redis.UniversalClient
	key    string
	max    int
	log    *slog.Logger

	local *Schemes // the schemes this instance's consumer tags with (the leader's)

	mu        sync.Mutex
	active    map[string]querycache.LSN // encoded scheme → activeFrom, as read from Redis
	requested map[string]bool           // pending registrations this instance wrote
	toAdopt   map[string]querycache.Scheme
	adopted   map[string]querycache.LSN // adopted here, activeFrom not yet written to Redis
	refresh   chan struct{}
}

// SharedSchemesConfig configures SharedSchemes.
type SharedSchemesConfig struct {
	// Client is the shared Redis. Required.
	Client redis.UniversalClient
	// Key is the hash holding the schemes. default: "pgcache:{schemes}"
	Key string
	// MaxSchemes bounds the registry; past it new schemes are refused (their
	// entries take wide tags). default: 100000
	MaxSchemes int
	// Logger receives registry errors. default: slog.Default()
	Logger *slog.Logger
}

// NewSharedSchemes returns a registry over Redis. Run must run for it to learn
// what the consumer adopted.
func NewSharedSchemes(cfg SharedSchemesConfig) (*SharedSchemes, error) {
	if cfg.Client == nil {
		return nil, errors.New("invalidate: SharedSchemesConfig.Client is required")
	}
	if cfg.Key == "" {
		cfg.Key = "pgcache:{schemes}"
	}
	if cfg.MaxSchemes <= 0 {
		cfg.MaxSchemes = 100000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &SharedSchemes{
		client: cfg.Client, key: cfg.Key, max: cfg.MaxSchemes, log: cfg.Logger,
		local:     NewSchemes(DefaultMaxSchemesPerRelation, cfg.MaxSchemes),
		active:    make(map[string]querycache.LSN),
		requested: make(map[string]bool),
		toAdopt:   make(map[string]querycache.Scheme),
		adopted:   make(map[string]querycache.LSN),
		refresh:   make(chan struct{}, 1),
	}, nil
}

// schemeJSON is a scheme's encoding in the hash: stable and readable.
type schemeJSON struct {
	Schema  string   `json:"s"`
	Name    string   `json:"r"`
	Columns []string `json:"c"`
	Classes []uint8  `json:"k"`
}

func encodeScheme(s querycache.Scheme) string {
	j := schemeJSON{Schema: s.Relation.Schema, Name: s.Relation.Name}
	for _, c := range s.Columns {
		j.Columns = append(j.Columns, c.Name)
		j.Classes = append(j.Classes, uint8(c.Class))
	}
	b, _ := json.Marshal(j)
	return string(b)
}

func decodeScheme(field string) (querycache.Scheme, bool) {
	var j schemeJSON
	if json.Unmarshal([]byte(field), &j) != nil || len(j.Columns) == 0 || len(j.Columns) != len(j.Classes) {
		return querycache.Scheme{}, false
	}
	s := querycache.Scheme{Relation: querycache.Relation{Schema: j.Schema, Name: j.Name}}
	for i, name := range j.Columns {
		s.Columns = append(s.Columns, querycache.PredicateColumn{Name: name, Class: querycache.ValueClass(j.Classes[i])})
	}
	return s, true
}

// Activate implements SchemeRegistry.
func (r *SharedSchemes) Activate(ctx context.Context, s querycache.Scheme, _ querycache.LSN) (querycache.LSN, bool) {
	enc := encodeScheme(s)
	r.mu.Lock()
	from, ok := r.active[enc]
	requested := r.requested[enc]
	if !ok && !requested {
		r.requested[enc] = true
	}
	r.mu.Unlock()
	if ok {
		return from, true
	}
	if !requested {
		// First use here: add it as pending (HSETNX keeps an activeFrom already set).
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := r.client.HSetNX(ctx, r.key, enc, "").Err(); err != nil {
			r.mu.Lock()
			delete(r.requested, enc)
			r.mu.Unlock()
			return 0, false
		}
		select {
		case r.refresh <- struct{}{}:
		default:
		}
	}
	return 0, false
}

// Of returns the schemes the consumer tags rel's changes with (those adopted).
func (r *SharedSchemes) Of(rel querycache.Relation) []querycache.Scheme { return r.local.Of(rel) }

// adoptAll takes every scheme of the hash into the consumer's registry: a new
// consumer does this before applying anything. Schemes already active keep their
// activeFrom (this consumer tags them from its first transaction, which is later);
// pending ones become active at the consumer's first adoption point.
func (r *SharedSchemes) adoptAll(ctx context.Context) error {
	all, err := r.client.HGetAll(ctx, r.key).Result()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for field, v := range all {
		s, ok := decodeScheme(field)
		if !ok || !r.local.Register(s) {
			continue
		}
		if v == "" {
			r.toAdopt[field] = s
		}
	}
	return nil
}

// adopt runs on the consumer, between two transactions: pending schemes become
// part of its registry, active from watermark (every later transaction is tagged
// with them). It does no I/O; Run writes the activeFrom values to Redis.
func (r *SharedSchemes) adopt(watermark querycache.LSN) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for field, s := range r.toAdopt {
		delete(r.toAdopt, field)
		if r.local.Register(s) {
			r.adopted[field] = watermark
		}
	}
}

// Run keeps the registry in step with Redis until ctx is done: it reads what is
// active, and (on the consumer's instance) queues pending schemes for adoption
// and publishes their activeFrom.
func (r *SharedSchemes) Run(ctx context.Context, leader func() bool) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := r.sync(ctx, leader()); err != nil && ctx.Err() == nil {
			r.log.Debug("pgcache: scheme registry", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-r.refresh:
		}
	}
}

func (r *SharedSchemes) sync(ctx context.Context, leader bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.mu.Lock()
	writes := make(map[string]any, len(r.adopted))
	for field, lsn := range r.adopted {
		writes[field] = strconv.FormatUint(uint64(lsn), 10)
	}
	r.mu.Unlock()
	if leader && len(writes) > 0 {
		if err := r.client.HSet(ctx, r.key, writes).Err(); err != nil {
			return err
		}
		r.mu.Lock()
		for field := range writes {
			delete(r.adopted, field)
		}
		r.mu.Unlock()
	}
	all, err := r.client.HGetAll(ctx, r.key).Result()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for field, v := range all {
		if v == "" {
			if leader && len(r.toAdopt) < r.max {
				if _, adopted := r.adopted[field]; !adopted {
					if s, ok := decodeScheme(field); ok && !r.local.known(s) {
						r.toAdopt[field] = s
					}
				}
			}
			continue
		}
		lsn, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		r.active[field] = querycache.LSN(lsn)
		delete(r.requested, field)
	}
	return nil
}
