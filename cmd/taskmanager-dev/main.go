// Command taskmanager-dev runs an in-memory PrismQ TaskManager for
// development: the same API, under /api, as the real one. It listens on
// 127.0.0.1:8000 unless --addr says otherwise.
//
//	go run ./cmd/taskmanager-dev --addr 127.0.0.1:8000 --style php --api-key dev-key
//	curl -H 'X-API-Key: dev-key' -X POST localhost:8000/api/tasks/claim -d '{"worker_id":"me","task_type_id":1}'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// config is the command line.
type config struct {
	addr         string
	style        string
	apiKey       string
	claimTimeout time.Duration
	maxAttempts  int
	maxBody      int64
	debug        bool
	seed         int
}

// defaultAddr is where the server listens without --addr: loopback only,
// since anyone who reaches it can read and complete every task.
const defaultAddr = "127.0.0.1:8000"

func parseFlags(args []string, output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("taskmanager-dev", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.addr, "addr", defaultAddr, "listen address (another interface than loopback only on purpose, e.g. 0.0.0.0:8000 in a container)")
	fs.StringVar(&c.style, "style", "php", "how to answer: documented (the API reference) or php (the PHP deployment's quirks)")
	// Its default is read after parsing: a flag's default is printed in
	// the usage text (on --help, and on any flag error, into logs).
	fs.StringVar(&c.apiKey, "api-key", "", "API key every call but /health must send as X-API-Key (default $TASKMANAGER_API_KEY; empty: none)")
	fs.DurationVar(&c.claimTimeout, "claim-timeout", 300*time.Second, "age after which a claimed task can be claimed again")
	fs.IntVar(&c.maxAttempts, "max-attempts", 3, "attempts before a failed task stays failed")
	fs.Int64Var(&c.maxBody, "max-body-bytes", 0, "answer 413 to larger request bodies (0: 16 MiB; negative: no limit)")
	fs.BoolVar(&c.debug, "debug", false, "log every request")
	fs.IntVar(&c.seed, "seed", 0, "register the example types and create this many tasks of each")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if !flagSet(fs, "api-key") {
		c.apiKey = os.Getenv("TASKMANAGER_API_KEY")
	}
	switch {
	case c.style != string(devserver.StyleDocumented) && c.style != string(devserver.StylePHP):
		return c, fmt.Errorf("--style must be documented or php, not %q", c.style)
	case c.claimTimeout < time.Second:
		return c, fmt.Errorf("--claim-timeout must be 1s or more, not %s", c.claimTimeout)
	case c.maxAttempts < 1:
		return c, fmt.Errorf("--max-attempts must be 1 or more, not %d", c.maxAttempts)
	case c.seed < 0:
		return c, fmt.Errorf("--seed must be 0 or more, not %d", c.seed)
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q (flags only)", fs.Arg(0))
	}
	return c, nil
}

// flagSet reports whether the flag name was given.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "taskmanager-dev: %v\n", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if c.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := devserver.New(devserver.Options{
		Style: devserver.Style(c.style), APIKey: c.apiKey, ClaimTimeout: c.claimTimeout,
		MaxAttempts: c.maxAttempts, MaxBodyBytes: c.maxBody, Logger: log,
	})
	hs, url, err := srv.Listen(c.addr)
	if err != nil {
		log.Error("cannot listen", "addr", c.addr, "err", err)
		os.Exit(1)
	}
	if !loopback(c.addr) {
		log.Warn("listening beyond loopback: whoever reaches this address can read, claim and complete tasks", "addr", c.addr, "api_key_required", c.apiKey != "")
	}
	log.Info("taskmanager-dev serving", "url", url, "style", c.style, "api_key_required", c.apiKey != "")
	if c.seed > 0 {
		tc, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: c.apiKey})
		if err == nil {
			_, err = devserver.Seed(context.Background(), tc, c.seed)
		}
		if err != nil {
			log.Error("seeding failed", "err", err)
			os.Exit(1)
		}
		log.Info("seeded example types and tasks", "tasks_per_type", c.seed, "types", len(devserver.ExampleTypes()))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdown)
}
