package bridge

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prismq/tmbridge/workflows"
)

// typeOption declares one per-type option, a key of type_defaults: and of
// types.<name>: — the one place its default and meaning are written. The
// README's per-type table (typeOptionsTable) and --help come from
// typeOptions(); a test checks that every koanf key of TypeConfig has an
// entry and that each def is what workflows.TypeOptions.WithDefaults fills.
type typeOption struct {
	key  string // dotted path below the type, e.g. retry.maximum_attempts
	def  any    // the default WithDefaults fills in; nil: none, or doc says
	doc  string // the default as documentation shows it, when def is nil or needs words
	help string // meaning; `code` in backticks, which --help drops
}

func typeOptions() []typeOption {
	return []typeOption{
		{key: "handler", doc: "the type's name",
			help: "activity (registered handler) that runs the task"},
		{key: "task_queue", doc: "the bridge's",
			help: "run the handler on another task queue (a worker in any Temporal SDK)"},
		{key: "local", def: false,
			help: "run handler and report as local activities: far less load on Temporal per task; for handlers that finish in seconds; not with `task_queue`"},
		{key: "start_to_close_timeout", def: workflows.DefaultStartToCloseTimeout,
			help: "bound on one attempt of the handler"},
		{key: "schedule_to_close_timeout", doc: "none",
			help: "bound on all attempts together"},
		{key: "heartbeat_timeout", def: workflows.DefaultHeartbeatTimeout,
			help: "an attempt not heard from this long is retried (handlers heartbeat automatically); at least " + code(shortDuration(workflows.MinHeartbeatTimeout))},
		{key: "retry.initial_interval", def: time.Second,
			help: "wait before the first retry"},
		{key: "retry.backoff_coefficient", def: 2.0,
			help: "each wait is the one before times this"},
		{key: "retry.maximum_interval", def: time.Minute, doc: "`1m`, or `retry.initial_interval` if longer",
			help: "longest wait between attempts"},
		{key: "retry.maximum_attempts", def: int32(workflows.DefaultMaximumAttempts), doc: "`3` (`-1`: unlimited)",
			help: "Temporal attempts of the handler; TaskManager's own re-queueing comes on top"},
		{key: "retry.non_retryable_error_types",
			help: "application error types that are not retried"},
		{key: "claim_wait", def: workflows.DefaultClaimWait,
			help: "after a 403 on report (the task is claimed by another worker), wait this long for a new claim before giving up with claim lost; steps wait as long for a newer claim's signal"},
		{key: "steps",
			help: "run the task as steps, in sequence or `parallel` (see Composing)"},
		{key: "workflow",
			help: "run the task as this registered Go workflow (see Composing)"},
		{key: "exec",
			help: "handler: a command (see Composing); under `types.<name>` only"},
		{key: "http",
			help: "handler: an HTTP endpoint (see Composing); under `types.<name>` only"},
	}
}

// writeTypeOptionsHelp lists typeOptions() for --help.
func writeTypeOptionsHelp(w io.Writer) {
	fmt.Fprint(w, "Per-type options, in the config file under type_defaults: and types.<name>:\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "  key\tdefault\tmeaning\n")
	for _, o := range typeOptions() {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", o.key, plain(docDefault(o.def, o.doc)), plain(o.help))
	}
	_ = tw.Flush()
	fmt.Fprint(w, "Steps, workflow, exec and http: see Composing in the README.\n")
}

// docDefault shows a default: doc if given, else def; "—" for none.
func docDefault(def any, doc string) string {
	if doc != "" {
		return doc
	}
	switch d := def.(type) {
	case nil:
		return "—"
	case string:
		if d == "" {
			return "—"
		}
	case []string:
		if len(d) == 0 {
			return "—"
		}
		return code(strings.Join(d, ","))
	case time.Duration:
		return code(shortDuration(d))
	}
	return code(fmt.Sprint(def))
}

// shortDuration writes d as a person would: 5m, not 5m0s; 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// plain drops the backticks of help text, for --help.
func plain(s string) string { return strings.ReplaceAll(s, "`", "") }

func code(s string) string { return "`" + s + "`" }
