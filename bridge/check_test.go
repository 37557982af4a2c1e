package bridge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

const checkKey = "check-test-secret-key"

// fakeAdmin is an in-memory Temporal for check and setup.
type fakeAdmin struct {
	mu         sync.Mutex
	dialErr    error
	healthErr  error
	namespaces map[string]map[string]enums.IndexedValueType // custom attributes by namespace
	addErr     error
	// raceAdd: another setup adds the attributes first, so ours is
	// answered AlreadyExists.
	raceAdd bool
	// hidden: added attributes are listed only after this many more lists
	// (Elasticsearch adds them in the background).
	hidden int
	adds   []map[string]enums.IndexedValueType
	closed bool
}

func newFakeAdmin() *fakeAdmin {
	return &fakeAdmin{namespaces: map[string]map[string]enums.IndexedValueType{
		"default": {SearchAttrTaskType: enums.INDEXED_VALUE_TYPE_KEYWORD, SearchAttrTaskID: enums.INDEXED_VALUE_TYPE_KEYWORD},
	}}
}

func (f *fakeAdmin) dial(context.Context, client.Options) (temporalAdmin, error) {
	if f.dialErr != nil {
		return nil, f.dialErr
	}
	return f, nil
}

func (f *fakeAdmin) CheckHealth(context.Context) error { return f.healthErr }

func (f *fakeAdmin) DescribeNamespace(_ context.Context, ns string) (enums.NamespaceState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.namespaces[ns]; !ok {
		return 0, serviceerror.NewNamespaceNotFound(ns)
	}
	return enums.NAMESPACE_STATE_REGISTERED, nil
}

func (f *fakeAdmin) SearchAttributes(_ context.Context, ns string) (map[string]enums.IndexedValueType, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	attrs, ok := f.namespaces[ns]
	if !ok {
		return nil, serviceerror.NewNamespaceNotFound(ns)
	}
	out := map[string]enums.IndexedValueType{}
	for k, v := range attrs {
		out[k] = v
	}
	if f.hidden > 0 {
		f.hidden--
		for _, add := range f.adds {
			for k := range add {
				delete(out, k)
			}
		}
	}
	return out, nil
}

func (f *fakeAdmin) AddSearchAttributes(_ context.Context, ns string, attrs map[string]enums.IndexedValueType) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addErr != nil {
		return f.addErr
	}
	for k, v := range attrs {
		f.namespaces[ns][k] = v
	}
	if f.raceAdd {
		return serviceerror.NewAlreadyExists("search attribute " + SearchAttrTaskType + " already exists")
	}
	f.adds = append(f.adds, attrs)
	return nil
}

func (f *fakeAdmin) Close() { f.closed = true }

// checkBundle is a dev TaskManager with the example types registered, a
// fake Temporal, and the config check reads.
type checkBundle struct {
	tm    *devserver.Server
	url   string
	api   *taskmanager.Client
	admin *fakeAdmin
}

func setupCheck(t *testing.T, style devserver.Style) *checkBundle {
	t.Helper()
	tm := devserver.New(devserver.Options{Style: style, APIKey: checkKey})
	url := tm.Start(t)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: checkKey})
	require.NoError(t, err)
	for _, et := range devserver.ExampleTypes() {
		_, err := api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: et.Name, Version: "1.0.0", ParamSchema: json.RawMessage(et.Schema)})
		require.NoError(t, err)
	}
	return &checkBundle{tm: tm, url: url, api: api, admin: newFakeAdmin()}
}

// check runs tmbridge check's checks with args, the bundle's API key and
// reg (the example handlers when nil).
func (b *checkBundle) check(t *testing.T, reg *activities.Registry, args ...string) (*checker, string) {
	t.Helper()
	return b.checkWith(t, reg, checkKey, args...)
}

// checkWith is check with another API key ("": none).
func (b *checkBundle) checkWith(t *testing.T, reg *activities.Registry, key string, args ...string) (*checker, string) {
	t.Helper()
	var env []string
	if key != "" {
		env = []string{"TASKMANAGER_API_KEY=" + key}
	}
	cfg, err := Load(append([]string{"--api-url=" + b.url, "--temporal-address=127.0.0.1:7233"}, args...), env, io.Discard)
	require.NoError(t, err)
	if reg == nil {
		reg = activities.NewRegistry()
		activities.RegisterExamples(reg)
	}
	copts, err := ClientOptions(cfg, env, subcommandLogger(io.Discard, cfg))
	require.NoError(t, err)
	c := &checker{cfg: cfg, copts: copts, workflows: map[string]any{}, dial: b.admin.dial}
	c.reg, c.regErr = cfg.Registry(reg)
	c.table.secrets = []string{key}
	c.run(context.Background())
	var out bytes.Buffer
	require.NoError(t, c.table.write(&out))
	if key != "" {
		require.NotContains(t, out.String(), key)
	}
	return c, out.String()
}

// row returns the row named check; it fails the test when there is none.
func row(t *testing.T, c *checker, check string) checkRow {
	t.Helper()
	for _, r := range c.table.rows {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no row %q in %+v", check, c.table.rows)
	return checkRow{}
}

// Against a TaskManager and a Temporal that have all the bridge needs,
// in both answer styles (PHP's type listing is broken: check never lists),
// every row passes and the exit status is 0.
func TestCheck_passes_on_a_good_setup(t *testing.T) {
	t.Parallel()
	for _, style := range []devserver.Style{devserver.StylePHP, devserver.StyleDocumented} {
		t.Run(string(style), func(t *testing.T) {
			t.Parallel()
			b := setupCheck(t, style)
			c, out := b.check(t, nil)
			require.Zero(t, c.exitCode(), out)
			for _, r := range c.table.rows {
				require.Equal(t, checkPass, r.Result, "%+v", r)
			}
			reg := activities.NewRegistry()
			activities.RegisterExamples(reg)
			for _, name := range reg.Names() {
				require.Contains(t, row(t, c, "type "+name).Detail, "registered in TaskManager, id ")
				require.Equal(t, "Go handler "+name, row(t, c, "handler "+name).Detail)
			}
			require.Equal(t, "127.0.0.1:7233, TLS off, API key not set", row(t, c, "Temporal reachable").Detail)
			require.Contains(t, row(t, c, "TaskManager reachable").Detail, b.url+": healthy")
			require.Contains(t, out, "all 16 checks passed")
			require.True(t, b.admin.closed)
		})
	}
}

// Each thing wrong shows as its own FAIL row, with exit status 1 (78 for
// a config error); the checks that need a failed connection are SKIP; the
// others still run.
func TestCheck_fails_each_problem_in_its_row(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		args   []string
		env    string // another API key
		code   int    // the exit status, when not 1
		change func(*checkBundle)
		want   map[string]checkRow // by check: result and a part of the detail
	}{
		{name: "wrong API key", env: "not-the-key",
			want: map[string]checkRow{
				"TaskManager API key":   {Result: checkFail, Detail: "API key rejected (401)"},
				"task types":            {Result: checkSkip, Detail: "TaskManager refused the API call"},
				"TaskManager reachable": {Result: checkPass},
				"search attributes":     {Result: checkPass},
			}},
		{name: "no API key", env: "-",
			want: map[string]checkRow{
				"TaskManager API key": {Result: checkFail, Detail: "none is set (TASKMANAGER_API_KEY or api_key_file)"},
			}},
		{name: "type not registered", args: []string{"--task-types=example.echo,other.unregistered"},
			want: map[string]checkRow{
				"type example.echo":          {Result: checkPass},
				"type other.unregistered":    {Result: checkFail, Detail: `"other.unregistered" is not registered in TaskManager`},
				"handler other.unregistered": {Result: checkPass, Detail: "Go handler other.unregistered"},
			}},
		{name: "type without a handler", args: []string{"--task-types=example.echo,example.nohandler"}, code: ExitConfig,
			want: map[string]checkRow{
				"handlers":               {Result: checkFail, Detail: `task_types: "example.nohandler" has no handler or route in this bridge`},
				"type example.nohandler": {Result: checkFail, Detail: `"example.nohandler" has no handler or route in this bridge`},
			}},
		{name: "type id unknown", args: []string{"--task-type-ids=1,99"},
			want: map[string]checkRow{
				"type example.echo": {Result: checkPass, Detail: "id 1"},
				"type id 99":        {Result: checkFail, Detail: "task_type_ids: 99 is not a type this bridge can run"},
			}},
		{name: "Temporal unreachable", change: func(b *checkBundle) { b.admin.dialErr = errors.New("failed reaching server: connection refused") },
			want: map[string]checkRow{
				"Temporal reachable": {Result: checkFail, Detail: "127.0.0.1:7233, TLS off, API key not set: failed reaching server: connection refused"},
				"namespace default":  {Result: checkSkip, Detail: "Temporal unreachable"},
				"search attributes":  {Result: checkSkip, Detail: "Temporal unreachable"},
				"type example.echo":  {Result: checkPass},
			}},
		{name: "Temporal unhealthy", change: func(b *checkBundle) { b.admin.healthErr = serviceerror.NewUnavailable("not serving") },
			want: map[string]checkRow{
				"Temporal reachable": {Result: checkFail, Detail: "not serving"},
				"namespace default":  {Result: checkSkip},
			}},
		{name: "namespace missing", args: []string{"--temporal-namespace=nope"},
			want: map[string]checkRow{
				"namespace nope":    {Result: checkFail, Detail: `namespace "nope" does not exist`},
				"search attributes": {Result: checkSkip, Detail: "no namespace"},
			}},
		{name: "search attributes missing", change: func(b *checkBundle) { b.admin.namespaces["default"] = map[string]enums.IndexedValueType{} },
			want: map[string]checkRow{
				"search attributes": {Result: checkFail, Detail: "missing TaskType, TaskID (runs are found by memo and id only): run `tmbridge setup`"},
			}},
		{name: "search attribute of another type", change: func(b *checkBundle) {
			b.admin.namespaces["default"][SearchAttrTaskID] = enums.INDEXED_VALUE_TYPE_TEXT
		},
			want: map[string]checkRow{
				"search attributes": {Result: checkFail, Detail: "TaskID is Text, but the bridge needs Keyword"},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setupCheck(t, devserver.StylePHP)
			if tc.change != nil {
				tc.change(b)
			}
			reg := activities.NewRegistry()
			activities.RegisterExamples(reg)
			activities.Register(reg, "other.unregistered", func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })
			key := checkKey
			switch tc.env {
			case "":
			case "-":
				key = ""
			default:
				key = tc.env
			}
			c, out := b.checkWith(t, reg, key, tc.args...)
			require.Equal(t, cmp.Or(tc.code, 1), c.exitCode(), out)
			for check, want := range tc.want {
				got := row(t, c, check)
				require.Equal(t, want.Result, got.Result, "%s: %+v\n%s", check, got, out)
				require.Contains(t, got.Detail, want.Detail, check)
			}
			require.Regexp(t, `\n\d+ of \d+ checks failed\n$`, out)
		})
	}
}

// With neither task_types nor task_type_ids, a handler whose type
// TaskManager does not know is a WARN (the bridge serves the others), and
// the exit status stays 0; with no type known at all, it fails.
func TestCheck_unregistered_types_warn_unless_none_is_served(t *testing.T) {
	t.Parallel()
	b := setupCheck(t, devserver.StyleDocumented)
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	activities.Register(reg, "other.unregistered", func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })
	c, out := b.check(t, reg)
	require.Zero(t, c.exitCode(), out)
	require.Equal(t, checkRow{"type other.unregistered", checkWarn, "not registered in TaskManager: not served"}, row(t, c, "type other.unregistered"))
	require.Contains(t, out, "\nno check failed; 1 of 17 are warnings\n")

	only := activities.NewRegistry()
	activities.Register(only, "other.unregistered", func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })
	c, out = b.check(t, only)
	require.Equal(t, 1, c.exitCode(), out)
	require.Equal(t, checkFail, row(t, c, "task types").Result)
	require.Contains(t, row(t, c, "task types").Detail, "none of the types this bridge can run is registered in TaskManager")
}

// How each type runs is checked as New and the workflow would: a
// configured type without a handler fails the handlers (exit 78, a config
// error, as the bridge would not start); a `workflow:` type needs its
// workflow registered; another task queue is not checked.
func TestCheck_routes(t *testing.T) {
	t.Parallel()
	b := setupCheck(t, devserver.StyleDocumented)
	file := writeFile(t, `
types:
  example.echo: { workflow: EchoFlow }
  example.uppercase: { task_queue: elsewhere }
  other.exec: { exec: { command: [echo, "{}"] } }
  example.sleep:
    steps:
      - { handler: example.echo }
      - { handler: example.uppercase }
`)
	_, err := b.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: "other.exec", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	c, out := b.check(t, nil, "--config="+file)
	require.Equal(t, 1, c.exitCode(), out)
	require.Equal(t, checkRow{"handler example.echo", checkFail, `workflow "EchoFlow" is not registered in this program (bridge.WithWorkflow)`}, row(t, c, "handler example.echo"))
	require.Equal(t, checkRow{"handler example.uppercase", checkPass, "handler example.uppercase on task queue elsewhere (another worker: not checked)"}, row(t, c, "handler example.uppercase"))
	require.Equal(t, checkRow{"handler other.exec", checkPass, "exec handler (config)"}, row(t, c, "handler other.exec"))
	require.Equal(t, checkRow{"handler example.sleep", checkPass, "2 steps"}, row(t, c, "handler example.sleep"))

	file = writeFile(t, "types:\n  other.type: { handler: missing.handler }\n")
	c, out = b.check(t, nil, "--config="+file)
	require.Equal(t, ExitConfig, c.exitCode(), out)
	require.Contains(t, row(t, c, "handlers").Detail, `config: types.other.type: no handler "missing.handler" is registered`)

	// An exec handler's program that is not there would fail every task
	// of its type (python3 missing, say): the bridge does not start.
	file = writeFile(t, "types:\n  other.exec: { exec: { command: [tmbridge-no-such-program, x.py] } }\n")
	c, out = b.check(t, nil, "--config="+file)
	require.Equal(t, ExitConfig, c.exitCode(), out)
	require.Contains(t, row(t, c, "handlers").Detail, `config: types.other.exec.exec.command: exec: "tmbridge-no-such-program": executable file not found in $PATH`)
}

// The bridge refuses such a config before it connects to anything: exit
// 2, the type and the program named, whether Temporal answers or not.
func TestRun_missing_exec_program_is_a_config_error(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "types:\n  py.wordcount: { exec: { command: [tmbridge-no-such-program, wc.py] } }\n")
	var out, errOut bytes.Buffer
	code := run([]string{"--config=" + file, "--log-format=json", "--api-url=http://127.0.0.1:1/api"}, []string{"TEMPORAL_ADDRESS=127.0.0.1:1"}, &out, &errOut, activities.NewRegistry())
	require.Equal(t, ExitConfig, code, out.String()+errOut.String())
	require.Contains(t, out.String()+errOut.String(), `config: types.py.wordcount.exec.command: exec: \"tmbridge-no-such-program\": executable file not found in $PATH`)
	require.NotContains(t, out.String()+errOut.String(), "cannot connect to Temporal")
}

// An exec handler's program is looked for as a task would start it: in
// PATH, or, with a path, relative to its dir.
func TestRegistry_exec_program_must_be_there(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\necho '{}'\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "data.txt"), nil, 0o644))
	for _, tc := range []struct {
		exec activities.ExecConfig
		err  string
	}{
		{activities.ExecConfig{Command: []string{"sh", "-c", "echo {}"}}, ""},
		{activities.ExecConfig{Command: []string{"./run.sh"}, Dir: dir}, ""},
		{activities.ExecConfig{Command: []string{filepath.Join(dir, "run.sh")}}, ""},
		{activities.ExecConfig{Command: []string{"./run.sh"}}, `types.t.exec.command: exec: "./run.sh": stat ./run.sh: no such file or directory`},
		{activities.ExecConfig{Command: []string{"./data.txt"}, Dir: dir}, "permission denied"},
		{activities.ExecConfig{Command: []string{"tmbridge-no-such-program"}}, "executable file not found in $PATH"},
		{activities.ExecConfig{}, "exec.command: needs at least the program"}, // a Config built in code, not loaded
	} {
		cfg := Config{Types: map[string]TypeConfig{"t": {Exec: &tc.exec}}}
		_, err := cfg.Registry(activities.NewRegistry())
		if tc.err == "" {
			require.NoError(t, err, tc.exec)
		} else {
			require.ErrorContains(t, err, tc.err, tc.exec)
		}
	}
}

// The table has aligned columns, a header, one line per row (a detail's
// line breaks and tabs are folded), a summary, and no secret.
func TestCheckTable_renders_aligned_rows_without_secrets(t *testing.T) {
	t.Parallel()
	tab := checkTable{secrets: []string{"s3cret-key", "", "k"}}
	tab.add("config", checkPass, "fine")
	tab.add("TaskManager API key", checkFail, "sent s3cret-key\nand\tgot 401")
	tab.add("short", checkSkip, "k stays k")
	tab.add("config", checkWarn, "TMBRIDGE_X names no setting")
	var out bytes.Buffer
	require.NoError(t, tab.write(&out))
	require.Equal(t, ""+
		"CHECK                RESULT  DETAIL\n"+
		"config               PASS    fine\n"+
		"TaskManager API key  FAIL    sent [redacted]; and got 401\n"+
		"short                SKIP    k stays k\n"+
		"config               WARN    TMBRIDGE_X names no setting\n"+
		"\n"+
		"1 of 4 checks failed\n", out.String())

	tab.rows = slices.DeleteFunc(tab.rows, func(r checkRow) bool { return r.Result == checkFail })
	out.Reset()
	require.NoError(t, tab.write(&out))
	require.True(t, strings.HasSuffix(out.String(), "\nno check failed; 1 of 3 are warnings\n"), out.String())
}

// setup adds only what is missing, waits until Temporal lists it, and
// says what it did; run again, it does nothing.
func TestSetup_adds_missing_attributes_once(t *testing.T) {
	t.Parallel()
	admin := newFakeAdmin()
	admin.namespaces["fresh"] = map[string]enums.IndexedValueType{SearchAttrTaskID: enums.INDEXED_VALUE_TYPE_KEYWORD}
	admin.hidden = 2 // listed only at the third look
	var out bytes.Buffer
	require.NoError(t, setupSearchAttributes(context.Background(), admin, "fresh", &out, time.Minute))
	require.Equal(t, "namespace fresh: added search attributes TaskType (Keyword)\n", out.String())
	require.Equal(t, []map[string]enums.IndexedValueType{{SearchAttrTaskType: enums.INDEXED_VALUE_TYPE_KEYWORD}}, admin.adds)
	require.Zero(t, admin.hidden, "it waited until they were listed")

	out.Reset()
	require.NoError(t, setupSearchAttributes(context.Background(), admin, "fresh", &out, time.Minute))
	require.Equal(t, "namespace fresh: search attributes TaskType, TaskID already present (Keyword): nothing to do\n", out.String())
	require.Len(t, admin.adds, 1, "nothing added the second time")
}

// setup changes nothing when an attribute has another type, and says why
// when the namespace is missing, adding is refused or never shows.
func TestSetup_failures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(*fakeAdmin)
		ns     string
		want   string
	}{
		{name: "wrong type", ns: "default", change: func(a *fakeAdmin) { a.namespaces["default"][SearchAttrTaskType] = enums.INDEXED_VALUE_TYPE_TEXT },
			want: "namespace default: TaskType is Text, but the bridge needs Keyword: nothing was changed"},
		{name: "no namespace", ns: "nope", want: `namespace "nope" does not exist`},
		{name: "refused", ns: "fresh", change: func(a *fakeAdmin) { a.addErr = serviceerror.NewPermissionDenied("request unauthorized", "") },
			want: "namespace fresh: add search attributes TaskType, TaskID: request unauthorized (on Temporal Cloud, add them as Keyword with tcld or the Cloud UI)"},
		{name: "never listed", ns: "fresh", change: func(a *fakeAdmin) { a.hidden = 1 << 30 },
			want: "namespace fresh: search attributes added, but not listed after 300ms: still missing TaskType, TaskID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			admin := newFakeAdmin()
			admin.namespaces["fresh"] = map[string]enums.IndexedValueType{}
			if tc.change != nil {
				tc.change(admin)
			}
			var out bytes.Buffer
			err := setupSearchAttributes(context.Background(), admin, tc.ns, &out, 300*time.Millisecond)
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, out.String())
			if tc.name != "never listed" {
				require.Empty(t, admin.adds)
			}
		})
	}
}

// A setup that raced another one (AlreadyExists) waits for the attributes
// like its own.
func TestSetup_race_with_another_setup(t *testing.T) {
	t.Parallel()
	admin := newFakeAdmin()
	admin.namespaces["fresh"] = map[string]enums.IndexedValueType{}
	admin.raceAdd = true
	var out bytes.Buffer
	require.NoError(t, setupSearchAttributes(context.Background(), admin, "fresh", &out, time.Minute))
	require.Equal(t, "namespace fresh: added search attributes TaskType, TaskID (Keyword)\n", out.String())
}

// tmbridge --help lists check and setup; each has its own --help; a
// config error is exit status 78 before anything is dialled.
func TestRun_check_and_setup_commands(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	require.Zero(t, run([]string{"--help"}, nil, &out, &errOut, activities.NewRegistry()))
	require.Contains(t, out.String(), "tmbridge check [flags]")
	require.Contains(t, out.String(), "tmbridge setup [flags]")

	for _, cmd := range []string{"check", "setup"} {
		out.Reset()
		require.Zero(t, run([]string{cmd, "--help"}, nil, &out, &errOut, activities.NewRegistry()), cmd)
		require.True(t, strings.HasPrefix(out.String(), "tmbridge "+cmd+" "), out.String())
		require.Contains(t, out.String(), "Usage:\n  tmbridge "+cmd+" [flags]\n")
		require.Contains(t, out.String(), "--temporal-namespace")
		require.Contains(t, out.String(), strconv.Itoa(ExitConfig)+" on a config error", "its help says the exit code")

		out.Reset()
		errOut.Reset()
		require.Equal(t, ExitConfig, run([]string{cmd, "--api-timeout=1ns"}, nil, &out, &errOut, activities.NewRegistry()), cmd)
		require.Contains(t, errOut.String(), "tmbridge "+cmd+": config: api_timeout")
		require.Empty(t, out.String())

		errOut.Reset()
		require.Equal(t, ExitConfig, run([]string{cmd, "now"}, nil, &out, &errOut, activities.NewRegistry()), cmd)
		require.Contains(t, errOut.String(), `unexpected argument "now": tmbridge `+cmd+" takes flags only")
	}
	// A mistyped subcommand does not run the bridge: before, it claimed.
	errOut.Reset()
	require.Equal(t, ExitConfig, run([]string{"chek", "--max-runs=1"}, nil, &out, &errOut, activities.NewRegistry()))
	require.Contains(t, errOut.String(), `tmbridge: unexpected argument "chek": tmbridge takes flags only (did you mean tmbridge check?)`)
}

// With temporal.search_attributes off, the bridge sets none: check does not
// ask for them, and their row is SKIP, not FAIL.
func TestCheck_search_attributes_off_skips_their_row(t *testing.T) {
	t.Parallel()
	b := setupCheck(t, devserver.StyleDocumented)
	b.admin.namespaces["default"] = map[string]enums.IndexedValueType{} // none in the namespace
	c, out := b.check(t, nil, "--search-attributes=false")
	require.Zero(t, c.exitCode(), out)
	r := row(t, c, "search attributes")
	require.Equal(t, checkSkip, r.Result, out)
	require.Contains(t, r.Detail, "temporal.search_attributes: false")
}

// check refuses a telemetry setting the bridge would exit on (exit 78),
// before it dials anything: it passed all its checks, and the bridge then
// refused to start. (Found by a review.)
func TestCheck_refuses_a_telemetry_setting_the_bridge_refuses(t *testing.T) {
	t.Parallel()
	for _, env := range []string{"OTEL_TRACES_EXPORTER=zipkin", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json"} {
		var out, errOut bytes.Buffer
		code := run([]string{"check", "--api-url=http://127.0.0.1:1/api"}, []string{"TEMPORAL_ADDRESS=127.0.0.1:1", env}, &out, &errOut, activities.NewRegistry())
		require.Equal(t, ExitConfig, code, env+": "+out.String()+errOut.String())
		require.Contains(t, errOut.String(), "tmbridge check: telemetry config: ", env)
	}
}
