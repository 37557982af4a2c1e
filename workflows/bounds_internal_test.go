package workflows

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"github.com/stretchr/testify/require"
)

// Templates and expressions run in workflow code, on data the task's
// creator chooses: their work and their values are bounded, and what
// passes a bound fails the step with a clear error, not the workflow task
// (which would fail again at every retry, the task left claimed). (Found
// by a review.)

// A template that repeats a large part per item stops at the bound, not
// once it rendered everything (here 100 MB).
func TestRender_stops_at_the_step_params_bound(t *testing.T) {
	items := make([]any, 5000)
	for i := range items {
		items[i] = number(i)
	}
	data := map[string]any{"params": map[string]any{"items": items, "prefix": strings.Repeat("p", 20_000)}, "steps": map[string]any{}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := render(map[string]any{"v": "{{ range .params.items }}{{ $.params.prefix }}/{{ . }},{{ end }}"}, data, newWork())
	runtime.ReadMemStats(&after)
	require.ErrorContains(t, err, "rendered params pass the 1900000 bytes a step accepts")
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8*MaxStepParamsBytes), "rendering allocated past the bound")
}

// A range inside a range over the task's data again (the product of two
// lists), or over a large number, loads (a small matrix is a fair
// config), and its passes are charged to the work budget at render.
func TestRender_nested_ranges_are_bounded_by_the_work_budget(t *testing.T) {
	a := make([]any, 12_000)
	for i := range a {
		a[i] = number(i)
	}
	data := map[string]any{"params": map[string]any{"a": a}, "steps": map[string]any{}}
	for _, tmpl := range []string{
		"{{ range .params.a }}{{ range $.params.a }}{{ end }}{{ end }}",
		"{{ range $x := .params.a }}{{ $x = $.params.a }}{{ range $x }}{{ end }}{{ end }}",
		"{{ range 100000000000 }}{{ end }}",
	} {
		require.NoError(t, checkTemplates("params", map[string]any{"v": tmpl}, []string{"params", "steps"}, nil, nil), tmpl)
		_, err := render(map[string]any{"v": tmpl}, data, newWork())
		require.ErrorIs(t, err, errTemplateWork, tmpl)
	}
	small := map[string]any{"params": map[string]any{"regions": []any{"eu", "us"}, "sizes": []any{"s", "m"}}, "steps": map[string]any{}}
	out, err := render(map[string]any{"v": "{{ range $r := .params.regions }}{{ range $.params.sizes }}{{ $r }}-{{ . }},{{ end }}{{ end }}"}, small, newWork())
	require.NoError(t, err)
	require.Equal(t, map[string]any{"v": "eu-s,eu-m,us-s,us-m,"}, out)
}

// A for_each value that shares a large part per item is small in CEL and
// huge as JSON: refused with the bound, before it is written out.
func TestEvalList_value_past_the_bound_is_refused(t *testing.T) {
	ids := make([]any, 1000)
	for i := range ids {
		ids[i] = float64(i)
	}
	vars := map[string]any{"params": map[string]any{"ids": ids, "opts": strings.Repeat("o", 5000)}, "steps": map[string]any{}}
	_, err := evalList(`params.ids.map(i, [i, params.opts])`, vars, exprTimeout)
	require.ErrorContains(t, err, "gave over 1500000 bytes of JSON")
	// 100 × 100 × 1 MB: gigabytes as JSON, a few pointers in CEL.
	vars = map[string]any{"params": map[string]any{"ids": ids[:100], "big": strings.Repeat("b", 1<<20)}, "steps": map[string]any{}}
	_, err = evalList(`params.ids.map(i, params.ids.map(j, params.big))`, vars, exprTimeout)
	require.ErrorContains(t, err, "gave over 1500000 bytes of JSON")
}

// A for_each of objects CEL builds gives JSON objects: CEL's map literal
// is a map[any]any, which encoding/json refused, so every task failed.
func TestEvalList_objects_built_in_cel_are_json_objects(t *testing.T) {
	require.NoError(t, checkExpr(`params.ids.map(i, {"id": i, 7: true})`, cel.ListType(cel.DynType), nil, nil))
	vars := map[string]any{"params": map[string]any{"ids": []any{1.0, 2.0}}, "steps": map[string]any{}}
	list, err := evalList(`params.ids.map(i, {"id": i, 7: true})`, vars, exprTimeout)
	require.NoError(t, err)
	b, err := json.Marshal(list)
	require.NoError(t, err)
	require.JSONEq(t, `[{"id":1,"7":true},{"id":2,"7":true}]`, string(b))
}

// An expression that runs past exprTimeout fails with that said (its
// result, recorded in a side effect, replays): the SDK takes a workflow
// task that runs over a second for a deadlock. One given no time (its
// workflow task's expressions took theirs) is not evaluated.
func TestEval_past_its_time_fails_saying_so(t *testing.T) {
	emails := make([]any, 1000)
	for i := range emails {
		emails[i] = "a@b.io"
	}
	vars := map[string]any{"params": map[string]any{"emails": emails}, "steps": map[string]any{}}
	// Over at once: the first interrupt check stops it.
	_, err := evalBool(`params.emails.all(e, e.matches("^[^@]+@[^@]+$"))`, vars, time.Nanosecond)
	require.ErrorContains(t, err, "took longer than 0s, what was left of the 300ms")
	_, err = evalBool(`true`, vars, 0)
	require.ErrorContains(t, err, "not evaluated: the expressions of this workflow task took their 300ms already")
}

// Functions whose work grows with their arguments (comparisons, escapers,
// print) are charged what they are handed: a template that hands one a
// large param per item of a long list stops at maxTemplateWork, though it
// writes nothing and nests no range.
func TestRender_work_handed_to_functions_is_bounded(t *testing.T) {
	items := make([]any, 20_000)
	for i := range items {
		items[i] = number(i)
	}
	data := map[string]any{"params": map[string]any{"a": items, "big": strings.Repeat("<", 500_000)}, "steps": map[string]any{}}
	for _, tmpl := range []string{
		"{{ range .params.a }}{{ $_ := html $.params.big }}{{ end }}",
		`{{ range .params.a }}{{ if eq $.params.big "x" }}y{{ end }}{{ end }}`,
		`{{ range .params.a }}{{ $_ := printf "%v" $.params }}{{ end }}`,
	} {
		_, err := render(map[string]any{"v": tmpl}, data, newWork())
		require.ErrorIs(t, err, errTemplateWork, tmpl)
	}
	// What a template hands its functions keeps its meaning.
	data = map[string]any{"params": map[string]any{"kind": "x", "n": number(3), "s": "<b>"}, "steps": map[string]any{}}
	out, err := render(map[string]any{"v": `{{ if eq .params.kind "x" }}{{ printf "%v-%d" .params.s 2 }}{{ html .params.s }}{{ end }}{{ if lt .params.n 4.5 }}!{{ end }}`}, data, newWork())
	require.NoError(t, err)
	require.Equal(t, map[string]any{"v": "<b>-2&lt;b&gt;!"}, out)
}

// jsonValue measures what encoding/json writes: escapes, base64 for
// bytes. CEL's null in an object stays null, and two keys that read the
// same are an error, not one of them at random.
func TestEvalList_values_as_json_writes_them(t *testing.T) {
	for src, s := range map[string]string{
		`[params.s, params.s, params.s]`:                      strings.Repeat("<", 200_000),
		`[bytes(params.s), bytes(params.s), bytes(params.s)]`: strings.Repeat("x", 1_000_000),
	} {
		vars := map[string]any{"params": map[string]any{"s": s}, "steps": map[string]any{}}
		_, err := evalList(src, vars, exprTimeout)
		require.ErrorContains(t, err, "gave over 1500000 bytes of JSON", src)
	}
	vars := map[string]any{"params": map[string]any{"ids": []any{1.0}}, "steps": map[string]any{}}
	list, err := evalList(`params.ids.map(i, {"id": i, "parent": null})`, vars, exprTimeout)
	require.NoError(t, err)
	b, err := json.Marshal(list)
	require.NoError(t, err)
	require.JSONEq(t, `[{"id":1,"parent":null}]`, string(b))
	_, err = evalList(`[{1: "a", "1": "b"}]`, vars, exprTimeout)
	require.ErrorContains(t, err, `a map has two keys that read "1" as JSON`)
	for _, s := range []string{"", "abc", "<a>&b", "caf\xe9", "é€𝄞", "\u2028\u2029", "\"\\\n\t\x00\x1f", strings.Repeat("x<", 1000)} {
		b, _ := json.Marshal(s)
		require.Equal(t, len(b), jsonStringBytes(s), "%q", s)
	}
}

// A single long call (matches over a large string) stops being waited for
// at its time: CEL checks for an interrupt only in comprehensions.
func TestEval_long_call_outside_a_comprehension_fails_at_its_time(t *testing.T) {
	vars := map[string]any{"params": map[string]any{"s": strings.Repeat("ab", 20_000)}, "steps": map[string]any{}}
	_, err := evalBool(`params.s.matches("[ab]{300}c")`, vars, time.Nanosecond)
	require.ErrorContains(t, err, "took longer than 0s, what was left of the 300ms")
}

// matches takes a constant pattern: one from the task's data could take
// seconds over a large string, in a single call no timeout interrupts.
func TestCheckExpr_matches_takes_a_constant_pattern(t *testing.T) {
	for _, src := range []string{`params.s.matches(params.re)`, `matches(params.s, steps.a.re)`} {
		err := checkExpr(src, cel.BoolType, nil, map[string]bool{"a": true})
		require.ErrorContains(t, err, "matches takes a constant pattern", src)
	}
	require.NoError(t, checkExpr(`params.s.matches("^[a-z]+$")`, cel.BoolType, nil, nil))
	require.NoError(t, checkExpr(`matches(params.s, "^[a-z]+$")`, cel.BoolType, nil, nil))
}

// newWork is a render's budget at the start of a workflow task.
func newWork() *workBudget { return &workBudget{left: maxTemplateWork} }

// A map's keys are sorted at each range over it, and when it is printed or
// written as JSON (a template that captures it whole): that is charged
// too, so five ranges over a large map, or six captures of it, pass the
// budget of one workflow task.
func TestRender_map_sorts_and_whole_captures_are_charged(t *testing.T) {
	m := make(map[string]any, 150_000)
	for i := range 150_000 {
		m[strconv.Itoa(i)] = number(i)
	}
	data := map[string]any{"params": map[string]any{"m": m}, "steps": map[string]any{}}
	_, err := render(map[string]any{"v": strings.Repeat("{{ range .params.m }}{{ end }}", 5)}, data, newWork())
	require.ErrorIs(t, err, errTemplateWork)
	work := newWork()
	for range 6 {
		if _, err = render(map[string]any{"data": "{{ .params.m }}"}, data, work); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, errTemplateWork)
	// One range, or one capture: within the budget.
	_, err = render(map[string]any{"v": "{{ range .params.m }}{{ end }}"}, data, newWork())
	require.NoError(t, err)
	_, err = render(map[string]any{"data": "{{ .params.m }}"}, data, newWork())
	require.NoError(t, err)
}
