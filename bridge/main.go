package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
)

// Main runs the tmbridge command with reg's handlers and returns the exit
// code: 0 on a clean stop (a signal, or --max-runs reached), 1 on a failure,
// ExitConfig (78) on a config error. `tmbridge check` and `tmbridge setup` check the
// deployment and set up its namespace with the same settings. A program
// that adds its own handlers is:
//
//	func main() {
//		reg := activities.NewRegistry()
//		activities.RegisterExamples(reg)
//		activities.Register(reg, "image.resize", resize)
//		os.Exit(bridge.Main(reg))
//	}
//
// Unless GOGC is set, Main runs the garbage collector at DefaultGOGC. On
// Linux it makes the process not dumpable, so that an exec handler's
// command (running as the same user) cannot read the bridge's environment
// from /proc.
func Main(reg *activities.Registry, opts ...Option) int {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(DefaultGOGC)
	}
	if err := hideEnvironment(); err != nil {
		fmt.Fprintln(os.Stderr, "tmbridge: warning: cannot hide this process's environment from the commands it runs:", err)
	}
	return run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr, reg, opts...)
}

// ExitConfig is the exit code of a config error (sysexits' EX_CONFIG): a
// supervisor should not restart the bridge until its config changes. Not
// 2, which Go's runtime exits with on a panic or a fatal error: a crash
// must be restarted.
const ExitConfig = 78

// DefaultGOGC is the garbage collector's target that Main sets when GOGC is
// not: the heap may grow half its live size between collections, not all
// of it (Go's 100). With 1,000 tasks in flight, live memory is mostly the
// goroutines and state the Temporal SDK keeps per running activity; at 50
// the bridge's peak RSS is 91–93 MiB instead of 100–108 MiB at 100, for
// 10–20 % more of its own CPU time (make bench's thousand in flight,
// TMBRIDGE_BENCH=inflight, 2026-11-30).
const DefaultGOGC = 50

// command is tmbridge or one of its subcommands, as --help shows it.
type command struct {
	name  string // as typed, e.g. "tmbridge check"
	about string // what it does: the start of its --help
}

var bridgeCommand = command{"tmbridge", "tmbridge runs PrismQ TaskManager tasks as Temporal workflows."}

// bridgeUsage is the usage line of tmbridge --help, with the subcommands.
const bridgeUsage = `  tmbridge [flags]         run the bridge
  tmbridge --version       print the build: version, commit, Go and Temporal SDK versions
  tmbridge check [flags]   check the settings, TaskManager and Temporal as the bridge would use them (exit 1 on any failure)
  tmbridge setup [flags]   add the search attributes TaskType and TaskID to the Temporal namespace
`

func run(args, environ []string, stdout, stderr io.Writer, reg *activities.Registry, opts ...Option) int {
	if slices.Contains(args, "--version") {
		fmt.Fprintln(stdout, Build())
		return 0
	}
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return runCheck(args[1:], environ, stdout, stderr, reg, opts...)
		case "setup":
			return runSetup(args[1:], environ, stdout, stderr)
		}
	}
	// Signals are caught from here on (they wait in sigs until the logger
	// is there): one that comes while the bridge starts stops it as
	// cleanly as one that comes while it claims.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	cfg, err := Load(args, environ, stdout)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tmbridge:", err)
		return ExitConfig
	}
	log := NewLogger(stderr, cfg.LogFormat, cfg.Debug)
	slog.SetDefault(log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go watchSignals(sigs, time.Now, func(sig os.Signal) {
		log.Info("stopping: no more claims; running handlers get the shutdown grace (signal again to exit at once)", "signal", sig.String(), "grace", cfg.ShutdownGrace)
		cancel()
	}, func() {
		log.Warn("second signal: exiting now; Temporal retries what was running")
		os.Exit(1)
	})
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	// Handlers before any connection: a missing one (or an exec handler's
	// program) is a config error whatever Temporal says. New checks again.
	if _, err := cfg.Registry(reg); err != nil {
		log.Error("cannot start", "err", err)
		return ExitConfig
	}
	worker.SetStickyWorkflowCacheSize(cfg.Temporal.WorkflowCacheSize) // process-wide: before any worker
	copts, err := ClientOptions(cfg, environ, log)
	if err != nil {
		log.Error("Temporal client config", "err", err)
		return ExitConfig
	}
	topts, flushSpans, err := telemetry(cfg, environ, &copts, log)
	if err != nil {
		log.Error("telemetry config", "err", err)
		return ExitConfig
	}
	defer flushSpans() // after Stop: the last spans are the reports'
	banner(log, cfg, copts)
	tc, err := client.DialContext(ctx, copts)
	if err != nil && ctx.Err() != nil {
		log.Info("tmbridge stopped before it connected to Temporal")
		return 0
	}
	if err != nil {
		attrs := []any{"address", copts.HostPort, "err", err}
		if hint := tlsHint(err, copts.ConnectionOptions.TLS); hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		log.Error("cannot connect to Temporal", attrs...)
		return 1
	}
	defer tc.Close()

	cfg.Temporal.Namespace = copts.Namespace // the config's, else Temporal's env or config file
	b, err := New(cfg, reg, tc, slices.Concat([]Option{WithLogger(log)}, topts, opts)...)
	if err != nil {
		log.Error("cannot start", "err", err)
		return ExitConfig
	}
	if ctx.Err() != nil {
		log.Info("tmbridge stopped before it started claiming")
		return 0
	}

	runErr := b.Run(ctx)
	// Stop may take up to StopTimeout: startsGrace, the shutdown grace and
	// cancelledReportGrace for cancelled handlers to report.
	stopCtx, stopCancel := context.WithTimeout(context.Background(), StopTimeout(cfg.ShutdownGrace)-tracingFlushTimeout)
	defer stopCancel()
	stopErr := b.Stop(stopCtx)
	switch {
	case runErr != nil && ctx.Err() != nil:
		log.Info("stopped while starting", "err", runErr) // a signal ended its checks
	case runErr != nil:
		log.Error("tmbridge failed", "err", runErr)
		return 1
	case stopErr != nil:
		log.Error("tmbridge did not stop cleanly", "err", stopErr)
		return 1
	}
	log.Info("tmbridge stopped", "tasks_claimed", b.adm.claimed())
	return 0
}

// sameStop is how soon after the first signal another is the same stop:
// `timeout`, or a kill of the process group, sends SIGTERM to the bridge
// twice at once, and the second must not cut its handlers' grace short.
const sameStop = 250 * time.Millisecond

// watchSignals calls stop at the first signal and exitNow at the next one
// that came sameStop or more after it (by now); those already waiting when
// the first was read, and those within sameStop of it, are the same stop.
func watchSignals(sigs <-chan os.Signal, now func() time.Time, stop func(os.Signal), exitNow func()) {
	sig := <-sigs
	first := now()
drain: // those already waiting with the first
	for {
		select {
		case <-sigs:
		default:
			break drain
		}
	}
	stop(sig)
	for range sigs {
		if now().Sub(first) >= sameStop {
			exitNow()
			return
		}
	}
}

// StopTimeout is the longest tmbridge takes to exit after SIGTERM with
// this shutdown grace: a claim under way gets 5 s, pending workflow starts
// 5 s, running handlers the grace, cancelled handlers 15 s to report, and
// the last spans 3 s to be exported. A supervisor's kill timeout (Kubernetes'
// terminationGracePeriodSeconds, systemd's TimeoutStopSec, compose's
// stop_grace_period) must exceed it.
func StopTimeout(shutdownGrace time.Duration) time.Duration {
	return claimStopGrace + startsGrace + shutdownGrace + cancelledReportGrace + tracingFlushTimeout
}

// ClientOptions are the Temporal client options the bridge dials with:
// Temporal's own settings in environ (TEMPORAL_ADDRESS,
// TEMPORAL_NAMESPACE, TLS, API key, config profile, read with the SDK's
// envconfig), then cfg's temporal.address, namespace and
// grpc_compression, and the SDK's logs through log (warnings, or all with
// debug; nil: slog.Default()). Main adds the config's metrics and tracing to them.
func ClientOptions(cfg Config, environ []string, log *slog.Logger) (client.Options, error) {
	if log == nil {
		log = slog.Default()
	}
	env := envList(environ)
	if err := checkTemporalEnv(env); err != nil {
		return client.Options{}, err
	}
	opts, err := envconfig.LoadClientOptions(envconfig.LoadClientOptionsRequest{EnvLookup: env})
	if err != nil {
		return opts, withoutTemporalSecrets(err, env)
	}
	// A key temporal.toml's reader does not know is a typo (api_kye), or
	// a tool's own field (the SDK lets tools keep theirs): said, not
	// refused.
	if _, err := envconfig.LoadClientConfig(envconfig.LoadClientConfigOptions{EnvLookup: env, ConfigFileStrict: true}); err != nil {
		log.Warn("Temporal's config file holds keys tmbridge does not use (a typo?)", "err", withoutTemporalSecrets(err, env))
	}
	if cfg.Temporal.Address != "" {
		opts.HostPort = cfg.Temporal.Address
	} else if opts.HostPort != "" {
		// TEMPORAL_ADDRESS is temporal.address (Load): this one is the
		// address of Temporal's config file profile.
		if err := checkTemporalAddress("the address of Temporal's config profile", opts.HostPort); err != nil {
			return client.Options{}, err
		}
	}
	if cfg.Temporal.Namespace != "" {
		opts.Namespace = cfg.Temporal.Namespace
	}
	if opts.HostPort == "" {
		opts.HostPort = client.DefaultHostPort
	}
	if opts.Namespace == "" {
		opts.Namespace = client.DefaultNamespace
	}
	opts.Identity = cfg.WorkerID
	if cfg.Temporal.GRPCCompression == "none" {
		opts.ConnectionOptions.GrpcCompression = &client.GrpcCompressionNone{}
	}
	level := slog.LevelWarn
	if cfg.Debug {
		level = slog.LevelDebug
	}
	opts.Logger = tlog.NewStructuredLogger(slog.New(levelFilter{log.Handler(), level}).With("component", "temporal"))
	return opts, nil
}

// tlsHint names the TLS setting to check when a dial error is a TLS
// problem, or returns "". gRPC hands the cause over as text only (errors.As
// finds no x509 error in it), so the text is matched.
func tlsHint(err error, conf *tls.Config) string {
	if conf == nil {
		return ""
	}
	msg := err.Error()
	noClientCert := len(conf.Certificates) == 0 && conf.GetClientCertificate == nil
	switch {
	case strings.Contains(msg, "x509: certificate signed by unknown authority"):
		return "TLS: the server's certificate is not signed by the CA in TEMPORAL_TLS_SERVER_CA_CERT_PATH (or, if unset, by a CA of the system)"
	case strings.Contains(msg, "x509: certificate is valid for"), strings.Contains(msg, "x509: certificate is not valid for any names"):
		return "TLS: the server's certificate does not hold the name dialled: set TEMPORAL_TLS_SERVER_NAME to a name it holds"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "TLS: the server does not speak TLS: set TEMPORAL_TLS=false for a plain connection"
	case noClientCert && strings.Contains(msg, "certificate required"):
		return "TLS: the server requires a client certificate: set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
	case noClientCert && (strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF")):
		// With TLS 1.3 a server that refuses the missing certificate may
		// close the connection before its alert is read.
		return "TLS: the server closed the connection: if it requires a client certificate, set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
	}
	return ""
}

// checkTemporalEnv refuses what envconfig would take silently: a TLS
// switch that is not a bool (TEMPORAL_TLS=yes was TLS off), and a
// TEMPORAL_CONFIG_FILE that names no file (it went unread).
func checkTemporalEnv(env envList) error {
	var errs []error
	for _, name := range []string{"TEMPORAL_TLS", "TEMPORAL_TLS_DISABLE_HOST_VERIFICATION"} {
		if v, ok := env.LookupEnv(name); ok && !slices.Contains([]string{"1", "0", "true", "false"}, strings.ToLower(v)) {
			errs = append(errs, fmt.Errorf("%s: want true or false (or 1, 0), got %s", name, describeValue(v)))
		}
	}
	if path, ok := env.LookupEnv("TEMPORAL_CONFIG_FILE"); ok {
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("TEMPORAL_CONFIG_FILE: %w", err))
		}
	}
	return errors.Join(errs...)
}

// withoutTemporalSecrets returns err with the values of Temporal's secret
// variables (its API key, TLS data, and a key or certificate pasted where
// its path goes) not shown: envconfig's errors quote them.
func withoutTemporalSecrets(err error, env envList) error {
	msg := err.Error()
	hidden := false
	for _, kv := range env.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		// Shorter values would be found in words of the message.
		if !strings.HasPrefix(name, "TEMPORAL_") || len(value) < 8 || !strings.Contains(msg, value) {
			continue
		}
		pasted := strings.HasSuffix(name, "_PATH") && !looksLikePath(value)
		if name != "TEMPORAL_API_KEY" && !strings.HasSuffix(name, "_DATA") && !pasted {
			continue
		}
		shown := fmt.Sprintf("<%s: %d bytes, not shown>", name, len(value))
		if pasted {
			shown = fmt.Sprintf("<%s: %d bytes that look like a key or certificate, not a path: use %s_DATA for the PEM itself>", name, len(value), strings.TrimSuffix(name, "_PATH"))
		}
		msg, hidden = strings.ReplaceAll(msg, value, shown), true
	}
	if !hidden {
		return err
	}
	return errors.New(msg)
}

// looksLikePath reports whether a *_PATH value may be shown: a path, not
// a key or certificate put there (PEM, its base64 form, a long token).
func looksLikePath(v string) bool {
	return len(v) <= 255 && strings.ContainsAny(v, "/.") && !strings.ContainsAny(v, " \t\n") &&
		!strings.Contains(v, "-----") && !strings.HasPrefix(v, "LS0t") // base64 of "-----"
}

// envList serves envconfig's lookups from an environ slice. A variable
// set empty is as if unset, as for the bridge's own settings: envconfig
// takes TEMPORAL_NAMESPACE= as the namespace "" (then "default", not the
// profile's), and an empty TEMPORAL_TLS_* path as TLS on.
type envList []string

func (e envList) Environ() []string {
	set := make([]string, 0, len(e))
	for _, kv := range e {
		if _, v, ok := strings.Cut(kv, "="); ok && v != "" {
			set = append(set, kv)
		}
	}
	return set
}

func (e envList) LookupEnv(key string) (string, bool) {
	for _, kv := range e {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, v != ""
		}
	}
	return "", false
}

// banner logs the start-up settings, as the reference worker does; secrets
// are shown only as set or not.
func banner(log *slog.Logger, cfg Config, t client.Options) {
	types := "every type with a handler or route"
	switch {
	case len(cfg.TaskTypes) > 0:
		types = strings.Join(cfg.TaskTypes, ", ")
	case len(cfg.TaskTypeIDs) > 0:
		types = "ids " + strings.Join(cfg.TaskTypeIDs, ", ")
	}
	runs := "unlimited"
	if cfg.MaxRuns > 0 {
		runs = fmt.Sprint(cfg.MaxRuns)
	}
	keySet := func(set bool) string {
		if set {
			return "set (redacted)"
		}
		return "not set"
	}
	bi := Build()
	log.Info("PrismQ TaskManager bridge (tmbridge): tasks run as Temporal workflows",
		"version", bi.Version,
		"commit", bi.Commit,
		"go", bi.GoVersion,
		"temporal_sdk", bi.SDKVersion,
		"worker_id", cfg.WorkerID,
		"api_url", taskmanager.RedactURL(cfg.APIURL),
		"api_key", keySet(cfg.APIKey != ""),
		"temporal", t.HostPort,
		"namespace", t.Namespace,
		"temporal_api_key", keySet(t.Credentials != nil),
		"tls", t.ConnectionOptions.TLS != nil,
		"task_queue", cfg.Temporal.TaskQueue,
		"task_types", types,
		"poll_interval", cfg.PollInterval,
		"max_in_flight", cfg.MaxInFlight,
		"max_runs", runs,
		"debug", cfg.Debug,
	)
}

// NewLogger returns the bridge's logger: tint for a terminal (or "text"),
// JSON otherwise (or "json"). Durations read as durations in both
// ("10s", not JSON's 10000000000 nanoseconds).
func NewLogger(w io.Writer, format string, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	if format == "text" || (format == "auto" && isTerminal(w)) {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: "15:04:05.000", NoColor: !isTerminal(w)}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: durationAsString}))
}

// durationAsString renders a duration attribute as its String().
func durationAsString(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// levelFilter drops records below a level (the SDK's chatty info logs).
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}
func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(a), f.min}
}
func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(n), f.min}
}
