// Command pgcache is pgcache's command-line tool: explain how a statement would be
// cached, check and set up a database for it, run the standalone invalidator, measure
// it, and run the demo.
//
//	pgcache <command> [flags] [arguments]
//
// Run "pgcache help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. Each lives in a file of its own and registers itself
// from init, so the commands stay independent of each other.
type command struct {
	summary string
	// run executes the command; args exclude the command's name. A *usageError
	// prints the command's usage.
	run func(ctx context.Context, stdout io.Writer, args []string) error
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

// usageError reports wrong arguments: the message is printed with the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pgcache: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	err := c.run(ctx, stdout, args[1:])
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "pgcache %s: %s\n", args[0], ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "pgcache %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: pgcache <command> [flags] [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-12s %s\n", name, commands[name].summary)
	}
}
