package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/envconfig"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
)

// This file is `tmbridge check`: with the bridge's own settings (the same
// flags, env and config file) it checks what the bridge needs, one row of
// a table per check, and exits 1 when any fails.
//
// Every check runs, whatever failed before it, except those that need a
// connection that failed: they are SKIP, saying why. Each waits
// api_timeout at most (TaskManager) or temporalCallTimeout (Temporal), so
// a dead endpoint is a FAIL, not a hang.
//
// The search attributes TaskType and TaskID are checked as a failure,
// though the bridge runs without them (it then finds runs by memo and id
// only): the namespace is not set up as the bridge is meant to run, and
// `tmbridge setup` fixes it. A type this bridge could run that TaskManager
// does not know, when neither task_types nor task_type_ids is set, is a
// WARN: the bridge serves the others, as it would.

var checkCommand = command{"tmbridge check",
	"tmbridge check checks the settings, TaskManager and Temporal as tmbridge with the same\n" +
		"flags, env and config file would use them, and prints one row per check.\n" +
		"Exit status: 0 when no check fails (warnings included), 1 when one fails, 78 on a config error."}

// The results of a check, as its row shows them.
const (
	checkPass = "PASS"
	checkFail = "FAIL"
	checkWarn = "WARN" // worth a look, not a failure
	checkSkip = "SKIP" // not run: what it needs failed
)

// temporalCallTimeout bounds each call to Temporal that check and setup
// make, the connection too (the SDK retries an unreachable server).
const temporalCallTimeout = 10 * time.Second

// checkRow is one line of tmbridge check's table.
type checkRow struct {
	Check  string
	Result string // checkPass, checkFail, checkWarn or checkSkip
	Detail string
}

// checkTable is tmbridge check's outcome, one row per check.
type checkTable struct {
	rows    []checkRow
	secrets []string // never shown: replaced wherever they appear
}

// add appends a row, its detail on one line and without secrets.
func (t *checkTable) add(check, result, detail string) {
	for _, s := range t.secrets {
		if len(s) >= 4 { // a shorter "key" would garble every word
			detail = strings.ReplaceAll(detail, s, "[redacted]")
		}
	}
	detail = strings.Join(strings.Fields(strings.ReplaceAll(detail, "\n", "; ")), " ")
	t.rows = append(t.rows, checkRow{check, result, detail})
}

// failures counts the rows that failed.
func (t *checkTable) failures() int {
	n := 0
	for _, r := range t.rows {
		if r.Result == checkFail {
			n++
		}
	}
	return n
}

// write renders the table with aligned columns and a summary line.
func (t *checkTable) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Check, r.Result, r.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	warnings := 0
	for _, r := range t.rows {
		if r.Result == checkWarn {
			warnings++
		}
	}
	var err error
	switch n := t.failures(); {
	case n > 0:
		_, err = fmt.Fprintf(w, "\n%d of %d checks failed\n", n, len(t.rows))
	case warnings > 0:
		_, err = fmt.Fprintf(w, "\nno check failed; %d of %d are warnings\n", warnings, len(t.rows))
	default:
		_, err = fmt.Fprintf(w, "\nall %d checks passed\n", len(t.rows))
	}
	return err
}

// temporalAdmin is what check and setup ask Temporal. Tests fake it.
type temporalAdmin interface {
	CheckHealth(ctx context.Context) error
	// DescribeNamespace returns the namespace's state.
	DescribeNamespace(ctx context.Context, namespace string) (enums.NamespaceState, error)
	// SearchAttributes returns the namespace's custom search attributes.
	SearchAttributes(ctx context.Context, namespace string) (map[string]enums.IndexedValueType, error)
	AddSearchAttributes(ctx context.Context, namespace string, attrs map[string]enums.IndexedValueType) error
	Close()
}

// sdkAdmin is temporalAdmin on an SDK client.
type sdkAdmin struct{ c client.Client }

// dialTemporal connects to Temporal within temporalCallTimeout.
func dialTemporal(ctx context.Context, opts client.Options) (temporalAdmin, error) {
	ctx, cancel := context.WithTimeout(ctx, temporalCallTimeout)
	defer cancel()
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, err
	}
	return sdkAdmin{c}, nil
}

func (a sdkAdmin) CheckHealth(ctx context.Context) error {
	_, err := a.c.CheckHealth(ctx, &client.CheckHealthRequest{})
	return err
}

func (a sdkAdmin) DescribeNamespace(ctx context.Context, namespace string) (enums.NamespaceState, error) {
	resp, err := a.c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: namespace})
	if err != nil {
		return enums.NAMESPACE_STATE_UNSPECIFIED, err
	}
	return resp.GetNamespaceInfo().GetState(), nil
}

func (a sdkAdmin) SearchAttributes(ctx context.Context, namespace string) (map[string]enums.IndexedValueType, error) {
	resp, err := a.c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return nil, err
	}
	return resp.GetCustomAttributes(), nil
}

func (a sdkAdmin) AddSearchAttributes(ctx context.Context, namespace string, attrs map[string]enums.IndexedValueType) error {
	_, err := a.c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: namespace, SearchAttributes: attrs})
	return err
}

func (a sdkAdmin) Close() { a.c.Close() }

// searchAttributes are the attributes the bridge sets on each run, in the
// order they are reported, all Keyword.
var searchAttributes = []string{SearchAttrTaskType, SearchAttrTaskID}

// runCheck is `tmbridge check`.
func runCheck(args, environ []string, stdout, stderr io.Writer, reg *activities.Registry, opts ...Option) int {
	cfg, err := load(checkCommand, args, environ, stdout)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tmbridge check:", err)
		return ExitConfig
	}
	copts, err := ClientOptions(cfg, environ, subcommandLogger(stderr, cfg))
	if err != nil {
		fmt.Fprintln(stderr, "tmbridge check: Temporal client config:", err)
		return ExitConfig
	}
	if _, err := tracingWanted(envList(environ)); err != nil { // as Main's telemetry refuses it
		fmt.Fprintln(stderr, "tmbridge check: telemetry config:", err)
		return ExitConfig
	}
	o := bridgeOptions{workflows: map[string]any{}}
	for _, opt := range opts {
		opt(&o)
	}
	c := &checker{cfg: cfg, copts: copts, workflows: o.workflows, dial: dialTemporal}
	c.reg, c.regErr = cfg.Registry(reg)
	c.table.secrets = []string{cfg.APIKey.Reveal(), temporalAPIKey(environ)}
	c.run(context.Background())
	if err := c.table.write(stdout); err != nil {
		fmt.Fprintln(stderr, "tmbridge check:", err)
		return 1
	}
	return c.exitCode()
}

// exitCode is check's exit status: ExitConfig when the handlers do not load (the
// bridge would not start: a config error), 1 when a check failed, else 0.
func (c *checker) exitCode() int {
	switch {
	case c.regErr != nil:
		return ExitConfig
	case c.table.failures() > 0:
		return 1
	}
	return 0
}

// subcommandLogger is the logger of check and setup: they print what they
// found themselves, so the SDK's logs show only with --debug.
func subcommandLogger(stderr io.Writer, cfg Config) *slog.Logger {
	if cfg.Debug {
		return NewLogger(stderr, cfg.LogFormat, true)
	}
	return slog.New(slog.DiscardHandler)
}

// temporalAPIKey returns the Temporal API key envconfig reads (env or
// profile), to keep it out of what check prints; "" when none.
func temporalAPIKey(environ []string) string {
	p, err := envconfig.LoadClientConfigProfile(envconfig.LoadClientConfigProfileOptions{EnvLookup: envList(environ)})
	if err != nil {
		return ""
	}
	return p.APIKey
}

// checker runs the checks of tmbridge check into its table.
type checker struct {
	cfg       Config
	reg       *activities.Registry // cfg.Registry's; nil when that failed
	regErr    error
	workflows map[string]any // registered with WithWorkflow
	copts     client.Options
	dial      func(context.Context, client.Options) (temporalAdmin, error)
	table     checkTable
}

// run runs every check: TaskManager's and Temporal's side by side, so
// that two dead endpoints take the time of one.
func (c *checker) run(ctx context.Context) {
	c.checkConfig()
	temporal := &checker{cfg: c.cfg, copts: c.copts, dial: c.dial, table: checkTable{secrets: c.table.secrets}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		temporal.checkTemporal(ctx)
	}()
	c.checkTaskManager(ctx)
	<-done
	c.table.rows = append(c.table.rows, temporal.table.rows...)
}

func (c *checker) checkConfig() {
	types := "every type with a handler or route"
	switch {
	case len(c.cfg.TaskTypes) > 0:
		types = "task_types " + strings.Join(c.cfg.TaskTypes, ", ")
	case len(c.cfg.TaskTypeIDs) > 0:
		types = "task_type_ids " + strings.Join(c.cfg.TaskTypeIDs, ", ")
	}
	c.table.add("config", checkPass, fmt.Sprintf("worker_id %s, task queue %s, serving %s", c.cfg.WorkerID, c.cfg.Temporal.TaskQueue, types))
	for _, w := range c.cfg.Warnings {
		c.table.add("config", checkWarn, w)
	}
	if c.regErr != nil {
		c.table.add("handlers", checkFail, c.regErr.Error())
	}
}

// checkTaskManager checks TaskManager's health, the API key, and each
// type to serve: registered there, and runnable here.
func (c *checker) checkTaskManager(ctx context.Context) {
	api, err := taskmanager.New(taskmanager.Options{BaseURL: c.cfg.APIURL, APIKey: c.cfg.APIKey.Reveal(), Timeout: c.cfg.APITimeout})
	if err != nil { // Load validated the URL: not expected
		c.table.add("TaskManager reachable", checkFail, err.Error())
		return
	}
	h, err := api.Health(ctx)
	if err != nil {
		c.table.add("TaskManager reachable", checkFail, fmt.Sprintf("%s: %v", api.BaseURL(), err))
		c.table.add("TaskManager API key", checkSkip, "TaskManager unreachable")
		c.table.add("task types", checkSkip, "TaskManager unreachable")
		return
	}
	detail := api.BaseURL() + ": " + h.Status
	if h.Database != "" {
		detail += ", database " + h.Database
	}
	c.table.add("TaskManager reachable", checkPass, detail)

	// Listing pending tasks needs the key, as the bridge's scout does.
	_, err = api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: 1})
	switch {
	case errors.Is(err, taskmanager.ErrUnauthorized) && c.cfg.APIKey == "":
		c.table.add("TaskManager API key", checkFail, "API key rejected: none is set (TASKMANAGER_API_KEY or api_key_file)")
	case errors.Is(err, taskmanager.ErrUnauthorized):
		c.table.add("TaskManager API key", checkFail, "API key rejected (401)")
	case err != nil:
		c.table.add("TaskManager API key", checkFail, err.Error())
	case c.cfg.APIKey == "":
		c.table.add("TaskManager API key", checkPass, "none set, none asked for")
	default:
		c.table.add("TaskManager API key", checkPass, "accepted")
	}
	if err != nil {
		c.table.add("task types", checkSkip, "TaskManager refused the API call")
		return
	}
	c.checkTypes(ctx, api)
}

// checkTypes looks up the types to serve as the bridge does (lookupTypes)
// and checks how each would run.
func (c *checker) checkTypes(ctx context.Context, api *taskmanager.Client) {
	runnable := runnableTypes(c.cfg, c.reg)
	served := 0
	var names []string
	for _, l := range lookupTypes(ctx, c.cfg, runnable, api, true) {
		row := "type " + cmpName(l)
		switch {
		case l.Unregistered:
			c.table.add(row, checkWarn, "not registered in TaskManager: not served")
			continue
		case l.Err != nil:
			c.table.add(row, checkFail, l.Err.Error())
		default:
			served++
			c.table.add(row, checkPass, "registered in TaskManager, id "+string(l.ID))
		}
		// A type with no handler here says so above; any other gets a
		// row on how it would run.
		if l.Name != "" && slices.Contains(runnable, l.Name) && !slices.Contains(names, l.Name) {
			names = append(names, l.Name)
		}
	}
	if served == 0 && len(c.cfg.TaskTypes) == 0 && len(c.cfg.TaskTypeIDs) == 0 {
		c.table.add("task types", checkFail, noTypeServed(runnable).Error())
	}
	for _, name := range names {
		result, detail := c.route(name)
		c.table.add("handler "+name, result, detail)
	}
}

// cmpName names a looked-up type in its row: by name, else by id.
func cmpName(l typeLookup) string {
	if l.Name != "" {
		return l.Name
	}
	return "id " + string(l.ID)
}

// route says how a task of type name would run, and whether it can.
func (c *checker) route(name string) (result, detail string) {
	o := c.cfg.TypeOptions(name)
	tc := c.cfg.Types[name]
	switch {
	case len(o.Steps) > 0:
		return checkPass, fmt.Sprintf("%d steps", len(o.Steps))
	case o.Workflow != "" && o.TaskQueue != "":
		return checkPass, fmt.Sprintf("workflow %s on task queue %s (another worker: not checked)", o.Workflow, o.TaskQueue)
	case workflowMissing(o, c.workflows):
		return checkFail, fmt.Sprintf("workflow %q is not registered in this program (bridge.WithWorkflow)", o.Workflow)
	case o.Workflow != "":
		return checkPass, "Go workflow " + o.Workflow
	case o.TaskQueue != "":
		return checkPass, fmt.Sprintf("handler %s on task queue %s (another worker: not checked)", o.HandlerFor(name), o.TaskQueue)
	}
	h := o.HandlerFor(name)
	if c.reg == nil {
		return checkSkip, "the handlers did not load"
	}
	if _, ok := c.reg.Lookup(h); !ok {
		return checkFail, fmt.Sprintf("no handler %q is registered", h)
	}
	switch {
	case tc.Exec != nil && h == name:
		return checkPass, "exec handler (config)"
	case tc.HTTP != nil && h == name:
		return checkPass, "http handler (config)"
	}
	return checkPass, "Go handler " + h
}

// checkTemporal checks the connection, the namespace and its search
// attributes.
func (c *checker) checkTemporal(ctx context.Context) {
	tls, key := "TLS off", "API key not set"
	if c.copts.ConnectionOptions.TLS != nil {
		tls = "TLS on"
	}
	if c.copts.Credentials != nil {
		key = "API key set"
	}
	conn := fmt.Sprintf("%s, %s, %s", c.copts.HostPort, tls, key)
	ns := c.copts.Namespace
	admin, err := c.dial(ctx, c.copts)
	if err == nil {
		defer admin.Close()
		cctx, cancel := context.WithTimeout(ctx, temporalCallTimeout)
		err = admin.CheckHealth(cctx)
		cancel()
	}
	if err != nil {
		detail := fmt.Sprintf("%s: %v", conn, err)
		if hint := tlsHint(err, c.copts.ConnectionOptions.TLS); hint != "" {
			detail += " (" + hint + ")"
		}
		c.table.add("Temporal reachable", checkFail, detail)
		c.table.add("namespace "+ns, checkSkip, "Temporal unreachable")
		c.table.add("search attributes", checkSkip, "Temporal unreachable")
		return
	}
	c.table.add("Temporal reachable", checkPass, conn)

	cctx, cancel := context.WithTimeout(ctx, temporalCallTimeout)
	state, err := admin.DescribeNamespace(cctx, ns)
	cancel()
	var notFound *serviceerror.NamespaceNotFound
	switch {
	case errors.As(err, &notFound):
		c.table.add("namespace "+ns, checkFail, fmt.Sprintf("namespace %q does not exist (temporal operator namespace create --namespace %s)", ns, ns))
		c.table.add("search attributes", checkSkip, "no namespace")
		return
	case err != nil:
		c.table.add("namespace "+ns, checkFail, err.Error())
		c.table.add("search attributes", checkSkip, "namespace not described")
		return
	case state != enums.NAMESPACE_STATE_REGISTERED:
		c.table.add("namespace "+ns, checkFail, "namespace is "+state.String())
	default:
		c.table.add("namespace "+ns, checkPass, "exists, "+state.String())
	}

	if !c.cfg.Temporal.SearchAttributes {
		c.table.add("search attributes", checkSkip, "off (temporal.search_attributes: false): runs are found by workflow id")
		return
	}
	cctx, cancel = context.WithTimeout(ctx, temporalCallTimeout)
	attrs, err := admin.SearchAttributes(cctx, ns)
	cancel()
	if err != nil {
		c.table.add("search attributes", checkFail, "cannot list them: "+err.Error())
		return
	}
	missing, wrong := compareSearchAttributes(attrs)
	switch {
	case len(wrong) > 0:
		c.table.add("search attributes", checkFail, strings.Join(wrong, "; ")+", but the bridge needs Keyword (see `tmbridge setup`)")
	case len(missing) > 0:
		c.table.add("search attributes", checkFail, fmt.Sprintf("missing %s (runs are found by memo and id only): run `tmbridge setup`", strings.Join(missing, ", ")))
	default:
		c.table.add("search attributes", checkPass, strings.Join(searchAttributes, ", ")+" are Keyword")
	}
}

// compareSearchAttributes returns the bridge's search attributes that
// attrs lacks, and those it has with another type than Keyword (each as
// "TaskType is Text").
func compareSearchAttributes(attrs map[string]enums.IndexedValueType) (missing, wrong []string) {
	for _, name := range searchAttributes {
		t, ok := attrs[name]
		switch {
		case !ok:
			missing = append(missing, name)
		case t != enums.INDEXED_VALUE_TYPE_KEYWORD:
			wrong = append(wrong, fmt.Sprintf("%s is %s", name, t.String()))
		}
	}
	return missing, wrong
}
