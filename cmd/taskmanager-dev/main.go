// Command taskmanager-dev runs an in-memory PrismQ TaskManager for
// development: the same API, under /api, as the real one.
//
//	go run ./cmd/taskmanager-dev --addr 127.0.0.1:8000 --style php --api-key dev-key
//	curl -H 'X-API-Key: dev-key' -X POST localhost:8000/api/tasks/claim -d '{"worker_id":"me","task_type_id":1}'
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen address")
	style := flag.String("style", "php", "how to answer: documented (the API reference) or php (the PHP deployment's quirks)")
	apiKey := flag.String("api-key", os.Getenv("TASKMANAGER_API_KEY"), "API key every call but /health must send as X-API-Key (default $TASKMANAGER_API_KEY; empty: none)")
	claimTimeout := flag.Duration("claim-timeout", 300*time.Second, "age after which a claimed task can be claimed again")
	maxAttempts := flag.Int("max-attempts", 3, "attempts before a failed task stays failed")
	maxBody := flag.Int64("max-body-bytes", 0, "answer 413 to larger request bodies (0: no limit)")
	debug := flag.Bool("debug", false, "log every request")
	seed := flag.Int("seed", 0, "register the example types and create this many tasks of each")
	flag.Parse()

	if *style != string(devserver.StyleDocumented) && *style != string(devserver.StylePHP) {
		fmt.Fprintf(os.Stderr, "taskmanager-dev: --style must be documented or php, not %q\n", *style)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := devserver.New(devserver.Options{
		Style: devserver.Style(*style), APIKey: *apiKey, ClaimTimeout: *claimTimeout,
		MaxAttempts: *maxAttempts, MaxBodyBytes: *maxBody, Logger: log,
	})
	hs, url, err := srv.Listen(*addr)
	if err != nil {
		log.Error("cannot listen", "addr", *addr, "err", err)
		os.Exit(1)
	}
	log.Info("taskmanager-dev serving", "url", url, "style", *style, "api_key_required", *apiKey != "")
	if *seed > 0 {
		c, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: *apiKey})
		if err == nil {
			_, err = devserver.Seed(context.Background(), c, *seed)
		}
		if err != nil {
			log.Error("seeding failed", "err", err)
			os.Exit(1)
		}
		log.Info("seeded example types and tasks", "tasks_per_type", *seed, "types", len(devserver.ExampleTypes()))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdown)
}
