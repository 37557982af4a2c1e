package workflows

import (
	"encoding/json"
	"strings"
	"testing"
	"text/template/parse"

	"cel.dev/cel-go/cel"
	"github.com/stretchr/testify/require"
)

func TestRender_values_keep_their_JSON_type(t *testing.T) {
	t.Parallel()
	params, err := decodeJSON([]byte(`{"n":1234567,"big":9007199254740993,"s":"x","null":null,"list":[1,2],"obj":{"a":true},"zero":0,"price":1.5,"tiny":1e-7}`))
	require.NoError(t, err)
	data := map[string]any{"params": params, "steps": map[string]any{"example.echo": map[string]any{"echo": "hi"}}}
	cases := map[string]string{
		"{{ .params.n }}":                            `1234567`,
		" {{- .params.big -}} ":                      `9007199254740993`,
		"n={{ .params.n }}":                          `"n=1234567"`,
		"{{ .params.null }}":                         `null`,
		"{{ .params.list }}":                         `[1,2]`,
		"{{ .params.obj }}":                          `{"a":true}`,
		`{{ index .steps "example.echo" }}`:          `{"echo":"hi"}`,
		`{{ index .params.list 1 }}`:                 `2`,
		`{{ len .params.list }}`:                     `2`,
		`{{ printf "%s-%s" .params.s "y" }}`:         `"x-y"`,
		`{{ .params.s }}{{ .params.s }}`:             `"xx"`,
		`{{ $x := .params.s }}{{ $x }}`:              `"x"`,
		`{{ if .params.obj.a }}yes{{ end }}`:         `"yes"`,
		`{{ range .params.list }}{{ . }}{{ end }}`:   `"12"`,
		`{{ if .params.zero }}t{{ else }}f{{ end }}`: `"f"`,
		`{{ if gt .params.price 1.0 }}dear{{ end }}`: `"dear"`,
		`{{ printf "%.2f" .params.price }}`:          `"1.50"`,
		`{{ eq .params.zero 0.0 }}`:                  `true`,
		`{{ .params.price }}`:                        `1.5`,
		`x{{ .params.tiny }}`:                        `"x1e-07"`,
	}
	for tmpl, want := range cases {
		out, err := render(map[string]any{"v": tmpl}, data, newWork())
		require.NoError(t, err, tmpl)
		got, err := json.Marshal(out.(map[string]any)["v"])
		require.NoError(t, err)
		require.JSONEq(t, want, string(got), tmpl)
		require.Equal(t, want, string(got), "%s: exact digits", tmpl)
	}

	for tmpl, want := range map[string]string{
		"{{ .params.missing }}":      `map has no entry for key "missing"`,
		"{{ .steps.nope.x }}":        `.steps.nope`,
		"{{ 1.5i }}":                 "template value is not JSON",
		"{{ .params.s.field }}":      "can't evaluate field field",
		"{{ index .params.list 9 }}": "out of range",
	} {
		_, err := render(map[string]any{"v": tmpl}, data, newWork())
		require.ErrorContains(t, err, want, tmpl)
	}
}

// Runs from before exact templates render as they did (template_legacy.go).
func TestLegacyRender_renders_as_before(t *testing.T) {
	t.Parallel()
	params, err := legacyDecode([]byte(`{"n":1234567,"list":[1,2],"s":"x"}`))
	require.NoError(t, err)
	data := map[string]any{"params": params, "steps": map[string]any{}}
	out, err := legacyRender(map[string]any{
		"text": "n={{ .params.n }}", "whole": "{{ .params.n }}", "list": "{{ .params.list }}", "index": "{{ index .params.list 0 }}",
	}, data)
	require.NoError(t, err)
	got, _ := json.Marshal(out)
	require.JSONEq(t, `{"text":"n=1.234567e+06","whole":1234567,"list":[1,2],"index":"1"}`, string(got))
	_, err = legacyRender(map[string]any{"v": "{{ .params.nope }}"}, data)
	require.EqualError(t, err, "v: template: .params.nope has no value")
}

// FuzzRender: any template over any params renders the same way twice, to
// JSON, without a panic; the config check never panics either. Seeds are
// in testdata/fuzz/FuzzRender; `make fuzz` runs it longer.
func FuzzRender(f *testing.F) {
	for _, s := range []struct{ tmpl, params string }{
		{"{{ .params.n }}", `{"n":1234567}`},
		{"id={{ .params.n }}", `{"n":9007199254740993}`},
		{`{{ index .steps "a" "b" }}`, `{"b":[1,{"c":null}]}`},
		{"{{ range .params.l }}{{ . }},{{ end }}", `{"l":[1,"x",true]}`},
		{"{{ with .params.o }}{{ .k }}{{ end }}", `{"o":{"k":"v"}}`},
		{"{{ .steps.a.b.c }}", `{"b":{"c":1e400}}`},
		{"{{ printf \"%v\" .params }}", `{"a":{"b":{"c":[]}}}`},
		{"plain", `{}`},
		{`{{ range $i, $e := .params.l }}{{ with index $e.o "x" }}{{ . }}{{ end }}{{ end }}`, `{"l":[{"o":[]}],"o":[]}`},
	} {
		f.Add(s.tmpl, []byte(s.params))
	}
	f.Fuzz(func(t *testing.T, tmpl string, raw []byte) {
		if len(tmpl) > 1024 || len(raw) > 1<<14 {
			t.Skip()
		}
		params, err := decodeJSON(raw)
		if err != nil {
			return
		}
		steps := map[string]bool{"a": true}
		in := map[string]any{"v": tmpl}
		_ = checkTemplates("params", in, []string{"params", "steps", "item"}, steps, steps)
		if loopsOverConstant(tmpl) {
			t.Skip() // {{ range 1000000000 }}: a config that loops is the config's
		}
		data := map[string]any{"params": params, "steps": map[string]any{"a": params}}
		out1, err1 := render(in, data, newWork())
		out2, err2 := render(in, data, newWork())
		require.Equal(t, err1 == nil, err2 == nil)
		if err1 != nil {
			require.Equal(t, err1.Error(), err2.Error())
			// The second rendering for PHP's [] is deterministic too.
			t1, e1 := renderTolerant(in, data, newWork(), MaxStepParamsBytes)
			t2, e2 := renderTolerant(in, data, newWork(), MaxStepParamsBytes)
			require.Equal(t, e1 == nil, e2 == nil)
			if e1 == nil {
				b1, err := json.Marshal(t1)
				require.NoError(t, err)
				b2, _ := json.Marshal(t2)
				require.Equal(t, string(b1), string(b2))
			}
			return
		}
		b1, err := json.Marshal(out1)
		require.NoError(t, err, "rendered params are JSON")
		b2, _ := json.Marshal(out2)
		require.Equal(t, string(b1), string(b2), "rendering is deterministic (it runs in workflow code)")
		if !strings.Contains(tmpl, "{{") {
			require.Equal(t, tmpl, out1.(map[string]any)["v"])
		}
	})
}

// loopsOverConstant reports a range over a number written in the template.
func loopsOverConstant(tmpl string) bool {
	t, _, err := parseTemplate(tmpl, func(any) string { return "" })
	if err != nil {
		return false
	}
	found := false
	var walk func(parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n != nil {
				for _, e := range n.Nodes {
					walk(e)
				}
			}
		case *parse.IfNode:
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			found = true // any range may take a number from a constant expression
		}
	}
	walk(t.Root)
	return found && strings.ContainsAny(tmpl, "0123456789")
}

// A template reads as objects the operands of its fields and of index with
// string keys, from the root, from $, from dot as with rebinds it, from
// variables, and below what range iterates; nothing else.
func TestTemplateObjects(t *testing.T) {
	tmpl, _, err := parseTemplate(`{{ with index .params.opts "a" "b" }}{{ .x }}{{ end }}{{ range .params.list }}{{ index .o "k" }}{{ index $.steps.s "v" }}{{ end }}{{ if .steps.t.w }}{{ index .params.l 0 }}{{ end }}{{ $x := .params.y }}{{ $x.z }}{{ range $i, $e := .params.rows }}{{ $e.c }}{{ end }}{{ $.params.q.r }}`, func(any) string { return "" })
	require.NoError(t, err)
	exact := func(p ...string) objectPath { return objectPath{path: p} }
	require.ElementsMatch(t, []objectPath{
		exact("params"), exact("params", "opts"), exact("params", "opts", "a"), exact("params", "opts", "a", "b"),
		{path: []string{"params", "list"}, deep: true}, exact("steps"), exact("steps", "s"), exact("steps", "t"),
		exact("params", "y"), {path: []string{"params", "rows"}, deep: true}, exact("params", "q"),
	}, templateObjects(tmpl.Root))
}

// An expression reads as objects the operands of its fields and of
// string keys, and below what it iterates or indexes by number; a list
// it compares is not one.
func TestCelObjects(t *testing.T) {
	checked, err := compileExpr(`has(params.opts.x) && params.tags == [] && steps["a.b"].y > 1 && params.list.exists(i, i.z) && params.rows[0].c`, cel.BoolType)
	require.NoError(t, err)
	exact := func(p ...string) objectPath { return objectPath{path: p} }
	require.ElementsMatch(t, []objectPath{
		exact("params"), exact("params", "opts"), exact("steps"), exact("steps", "a.b"),
		{path: []string{"params", "list"}, deep: true}, {path: []string{"params", "rows"}, deep: true},
	}, celObjects(checked))
}
