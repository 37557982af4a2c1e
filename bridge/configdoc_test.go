package bridge

import (
	"cmp"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/workflows"
)

// readmeTables are the README's generated sections, by marker name.
func readmeTables() []struct{ name, body string } {
	return []struct{ name, body string }{
		{"config-table", configTable()},
		{"type-options-table", typeOptionsTable()},
	}
}

// The README's settings tables are options() and typeOptions() rendered:
// a setting changed in code and not in the README fails here.
// TMBRIDGE_UPDATE_README=1 rewrites the README's tables instead.
func TestREADME_tables_are_generated_from_options(t *testing.T) {
	const path = "../README.md"
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	have := string(b)
	want := have
	for _, s := range readmeTables() {
		want, err = replaceSection(want, s.name, s.body)
		require.NoError(t, err)
	}
	if want == have {
		return
	}
	if os.Getenv("TMBRIDGE_UPDATE_README") == "1" {
		require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		t.Logf("rewrote the generated tables of %s", path)
		return
	}
	t.Errorf("README.md's settings tables differ from options() / typeOptions() in bridge/config*.go.\n"+
		"Change the declaration there, then rewrite the README with\n\n"+
		"\tTMBRIDGE_UPDATE_README=1 go test -run TestREADME ./bridge/\n\n"+
		"Lines that differ (- README, + generated):\n%s", lineDiff(have, want))
}

// replaceSection puts body between the lines <!-- name:begin … --> and
// <!-- name:end -->.
func replaceSection(doc, name, body string) (string, error) {
	begin, end := "<!-- "+name+":begin", "<!-- "+name+":end -->"
	i := strings.Index(doc, begin)
	if i < 0 {
		return "", fmt.Errorf("README.md has no %s … --> line", begin)
	}
	i += strings.IndexByte(doc[i:], '\n') + 1
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return "", fmt.Errorf("README.md has no %s line after %s", end, begin)
	}
	return doc[:i] + "\n" + body + "\n" + doc[i+j:], nil
}

func lineDiff(have, want string) string {
	a, b := strings.Split(have, "\n"), strings.Split(want, "\n")
	var out strings.Builder
	for _, l := range a {
		if !slices.Contains(b, l) {
			fmt.Fprintf(&out, "- %s\n", l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			fmt.Fprintf(&out, "+ %s\n", l)
		}
	}
	return out.String()
}

func TestReplaceSection(t *testing.T) {
	t.Parallel()
	doc := "a\n<!-- x:begin: generated -->\nold\n<!-- x:end -->\nb\n"
	got, err := replaceSection(doc, "x", "| new |\n")
	require.NoError(t, err)
	require.Equal(t, "a\n<!-- x:begin: generated -->\n\n| new |\n\n<!-- x:end -->\nb\n", got)
	_, err = replaceSection(doc, "y", "")
	require.ErrorContains(t, err, "<!-- y:begin")
}

// configKeys lists the koanf keys of struct type t, dotted: each field's,
// and the keys below a struct-valued field (not below a pointer, slice or
// map, which are documented as one key).
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for _, f := range koanfFields(t) {
		key := prefix + f.key
		out = append(out, key)
		if f.typ.Kind() == reflect.Struct {
			out = append(out, configKeys(f.typ, key+".")...)
		}
	}
	return out
}

// undocumented returns the keys of t that neither have an entry nor are
// a struct whose keys all have one.
func undocumented(t reflect.Type, prefix string, documented map[string]bool) []string {
	var out []string
	for _, f := range koanfFields(t) {
		key := prefix + f.key
		switch {
		case documented[key]:
		case f.typ.Kind() == reflect.Struct:
			out = append(out, undocumented(f.typ, key+".", documented)...)
		default:
			out = append(out, key)
		}
	}
	return out
}

// Every key of Config is declared in options(), and every option names a
// key of Config: a new field without docs fails here.
func TestOptions_declare_every_Config_key(t *testing.T) {
	t.Parallel()
	documented := map[string]bool{}
	for _, o := range options() {
		if !o.cliOnly {
			documented[strings.ReplaceAll(o.key, delim, ".")] = true
		}
		require.NotEmpty(t, o.help, o.key)
	}
	require.Empty(t, undocumented(reflect.TypeFor[Config](), "", documented), "Config keys without an entry in options()")
	keys := configKeys(reflect.TypeFor[Config](), "")
	for key := range documented {
		require.Contains(t, keys, key, "options() declares a key Config does not have")
	}
}

// Every koanf key of TypeConfig (workflows.TypeOptions with its squashed
// ActivityOptions and the retry.* keys of RetryOptions, exec, http) is
// declared in typeOptions(), and every entry names such a key.
func TestTypeOptions_declare_every_per_type_key(t *testing.T) {
	t.Parallel()
	documented := map[string]bool{}
	for _, o := range typeOptions() {
		require.False(t, documented[o.key], "%s is declared twice", o.key)
		documented[o.key] = true
		require.NotEmpty(t, o.help, o.key)
	}
	require.Empty(t, undocumented(typeConfigType, "", documented), "per-type keys without an entry in typeOptions()")
	keys := configKeys(typeConfigType, "")
	for key := range documented {
		require.Contains(t, keys, key, "typeOptions() declares a key TypeConfig does not have")
	}
	require.Contains(t, keys, "retry.maximum_attempts", "the walk reaches RetryOptions")
	require.Contains(t, keys, "local", "the walk reaches the squashed ActivityOptions")
}

// The defaults typeOptions() documents are those WithDefaults fills in.
func TestTypeOptions_defaults_are_the_real_ones(t *testing.T) {
	t.Parallel()
	defaults := reflect.ValueOf(workflows.DefaultTypeOptions())
	for _, o := range typeOptions() {
		if o.def == nil {
			continue
		}
		v := valueAt(t, defaults, o.key)
		for v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		require.Equal(t, o.def, v.Interface(), o.key)
	}
}

// valueAt returns the field of struct value v at a dotted koanf path.
func valueAt(t *testing.T, v reflect.Value, path string) reflect.Value {
	t.Helper()
	key, rest, nested := strings.Cut(path, ".")
	var walk func(v reflect.Value) (reflect.Value, bool)
	walk = func(v reflect.Value) (reflect.Value, bool) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
			if strings.Contains(opts, "squash") {
				if found, ok := walk(v.Field(i)); ok {
					return found, true
				}
			}
			if name == key {
				return v.Field(i), true
			}
		}
		return reflect.Value{}, false
	}
	field, ok := walk(v)
	require.True(t, ok, "no key %s", path)
	if nested {
		return valueAt(t, field, rest)
	}
	return field
}

func TestConfigTable_renders_defaults_and_keys(t *testing.T) {
	t.Parallel()
	table := configTable()
	for _, want := range []string{
		"| — | `--config`, `-c` | `TMBRIDGE_CONFIG` | — | YAML config file |",
		"| `api_key` | — | `TASKMANAGER_API_KEY` | — |",
		"| `api_timeout` | `--api-timeout` | `TASKMANAGER_API_TIMEOUT` | `30s` |",
		"| `claim_timeout` | `--claim-timeout` | `TASK_CLAIM_TIMEOUT` | `5m` |",
		"| `worker_id` | `--worker-id` | `WORKER_ID` | `tmbridge-<hostname>` |",
		"| `temporal.task_queue` | `--task-queue` | `TEMPORAL_TASK_QUEUE` | `tmbridge` |",
		"| `types.<name>` | — | — | — |",
	} {
		require.Contains(t, table, want)
	}
	host, _ := os.Hostname()
	if host != "" {
		require.NotContains(t, table, "tmbridge-"+host, "the table is the same on every machine")
	}
	require.Contains(t, typeOptionsTable(), "| `start_to_close_timeout` | `5m` |")
	require.Contains(t, typeOptionsTable(), "| `local` | `false` |")
}

func TestShortDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Second: "1m30s", 10 * time.Second: "10s",
		300 * time.Millisecond: "300ms", time.Hour + time.Second: "1h0m1s", 0: "0s",
	} {
		require.Equal(t, want, shortDuration(d), d.String())
	}
}

// --help lists every per-type option too, without markdown.
func TestLoad_help_lists_per_type_options(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	_, err := Load([]string{"--help"}, nil, &out)
	require.ErrorIs(t, err, ErrHelp)
	for _, o := range typeOptions() {
		require.Contains(t, out.String(), "  "+o.key+" ")
	}
	require.NotContains(t, out.String(), "`")
	require.Contains(t, out.String(), "default: temporal.max_concurrent_activities", "a default given in words shows")
}

// configTable renders options() as the README's settings table.
func configTable() string {
	var b strings.Builder
	b.WriteString("| key (YAML) | flag | env | default | meaning |\n|---|---|---|---|---|\n")
	for _, o := range options() {
		key := "—"
		if !o.cliOnly {
			key = code(cmp.Or(o.docKey, strings.ReplaceAll(o.key, delim, ".")))
		}
		var flags []string
		if o.flag != "" {
			flags = append(flags, code("--"+o.flag))
		}
		if o.short != "" {
			flags = append(flags, code("-"+o.short))
		}
		var env []string
		for _, e := range o.env {
			env = append(env, code(e))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", key, orDash(strings.Join(flags, ", ")),
			orDash(strings.Join(env, ", ")), docDefault(o.def, o.doc), cell(o.help))
	}
	return b.String()
}

// typeOptionsTable renders typeOptions() as the README's per-type table.
func typeOptionsTable() string {
	var b strings.Builder
	b.WriteString("| key | default | meaning |\n|---|---|---|\n")
	for _, o := range typeOptions() {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", code(o.key), docDefault(o.def, o.doc), cell(o.help))
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
