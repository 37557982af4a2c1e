package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// A step's `when` and `for_each` are CEL expressions
// (https://cel.dev) over two variables: params (the task's params) and
// steps (the results of the steps before, by name). CEL has no side
// effects and always ends, so it runs in workflow code; it is compiled and
// type-checked when the config loads.

// exprCostLimit bounds one evaluation (CEL's cost units: about one per
// value visited), so an expression over large params cannot stall a
// workflow task.
const exprCostLimit = 1_000_000

var exprEnv = sync.OnceValue(func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("params", cel.DynType),
		cel.Variable("steps", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		panic(err) // the declarations above are fixed
	}
	return env
})

// programs caches compiled expressions: compiling is pure, so a cache
// shared by every workflow is deterministic.
var programs sync.Map // source → compiled

// compiled is a program and the paths it reads as objects (objectPaths).
type compiled struct {
	prg     cel.Program
	objects [][]string
}

// compileExpr compiles src and checks that its type can be want (a bool or
// a list; dyn passes, and is checked when evaluated).
func compileExpr(src string, want *cel.Type) (*cel.Ast, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	checked, iss := exprEnv().Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, errors.New(strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	out := checked.OutputType()
	if !out.IsExactType(types.DynType) && !want.IsAssignableType(out) {
		return nil, fmt.Errorf("gives %s, want %s", out, want)
	}
	return checked, nil
}

func program(src string, want *cel.Type) (compiled, error) {
	if p, ok := programs.Load(src); ok {
		return p.(compiled), nil
	}
	checked, err := compileExpr(src, want)
	if err != nil {
		return compiled{}, err
	}
	p, err := exprEnv().Program(checked, cel.CostLimit(exprCostLimit))
	if err != nil {
		return compiled{}, err
	}
	c := compiled{prg: p, objects: objectPaths(checked)}
	programs.Store(src, c)
	return c, nil
}

// objectPaths returns the paths from params or steps that an expression
// reads as objects: the operands of a field (params.opts in
// has(params.opts.x)) or of a string key (params["opts"]["x"]).
func objectPaths(checked *cel.Ast) [][]string {
	var paths [][]string
	add := func(e ast.Expr) {
		if p := exprPath(e); p != nil && !slices.ContainsFunc(paths, func(q []string) bool { return slices.Equal(p, q) }) {
			paths = append(paths, p)
		}
	}
	ast.PreOrderVisit(ast.NavigateAST(checked.NativeRep()), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.SelectKind:
			add(e.AsSelect().Operand())
		case ast.CallKind:
			if call := e.AsCall(); call.FunctionName() == operators.Index && len(call.Args()) == 2 && call.Args()[1].Kind() == ast.LiteralKind {
				if _, ok := call.Args()[1].AsLiteral().Value().(string); ok {
					add(call.Args()[0])
				}
			}
		}
	}))
	return paths
}

// exprPath is e's path when e reads a value from params or steps by
// fields and string keys (params.opts, steps["a.b"].x); else nil.
func exprPath(e ast.Expr) []string {
	switch e.Kind() {
	case ast.IdentKind:
		if id := e.AsIdent(); id == "params" || id == "steps" {
			return []string{id}
		}
	case ast.SelectKind:
		if p := exprPath(e.AsSelect().Operand()); p != nil {
			return append(p, e.AsSelect().FieldName())
		}
	case ast.CallKind:
		if call := e.AsCall(); call.FunctionName() == operators.Index && len(call.Args()) == 2 && call.Args()[1].Kind() == ast.LiteralKind {
			if key, ok := call.Args()[1].AsLiteral().Value().(string); ok {
				if p := exprPath(call.Args()[0]); p != nil {
					return append(p, key)
				}
			}
		}
	}
	return nil
}

// emptyListsAt returns data with the empty list at each of paths (where
// there is one) an empty object, copying only what it changes; changed
// says whether any was. TaskManager's PHP deployment hands an empty
// object back as []: where an expression or template reads one as an
// object (has(params.opts.x), index .params.opts "x"), it is one.
func emptyListsAt(data map[string]any, paths [][]string) (out map[string]any, changed bool) {
	out = data
	for _, p := range paths {
		if v, ok := setEmptyObject(out, p); ok {
			out, changed = v, true
		}
	}
	return out, changed
}

// setEmptyObject returns m with the empty list at path an empty object, m
// itself copied on the way; ok is false when there is none there.
func setEmptyObject(m map[string]any, path []string) (map[string]any, bool) {
	v, found := m[path[0]]
	if !found {
		return nil, false
	}
	if len(path) == 1 {
		if l, isList := v.([]any); !isList || len(l) != 0 {
			return nil, false
		}
		out := maps.Clone(m)
		out[path[0]] = map[string]any{}
		return out, true
	}
	inner, isMap := v.(map[string]any)
	if !isMap {
		return nil, false
	}
	changed, ok := setEmptyObject(inner, path[1:])
	if !ok {
		return nil, false
	}
	out := maps.Clone(m)
	out[path[0]] = changed
	return out, true
}

// exprVars are an expression's variables: JSON values as CEL sees them.
func exprVars(params any, results map[string]json.RawMessage) map[string]any {
	steps := make(map[string]any, len(results))
	for name, raw := range results {
		steps[name] = exprJSON(raw) // a result is JSON
	}
	return map[string]any{"params": params, "steps": steps}
}

// exprJSON decodes raw for CEL: JSON values, numbers as doubles.
func exprJSON(raw []byte) any {
	var v any
	_ = json.Unmarshal(raw, &v)
	return v
}

// listPath matches a for_each that only names a list: params.ids,
// steps.fetch.items.
var listPath = regexp.MustCompile(`^\s*(params|steps)((\.[A-Za-z_][A-Za-z0-9_]*)+)\s*$`)

// listAt returns the list a for_each of the form listPath names, read from
// the JSON itself, not through CEL (which sees numbers as doubles and
// would round an id beyond 2^53); ok is false for any other expression or
// value (CEL then evaluates it, and says what is wrong).
func listAt(src string, params json.RawMessage, results map[string]json.RawMessage) (list []any, ok bool) {
	m := listPath.FindStringSubmatch(src)
	if m == nil {
		return nil, false
	}
	keys := strings.Split(m[2][1:], ".")
	raw := params
	if m[1] == "steps" {
		raw, keys = results[keys[0]], keys[1:]
	}
	for _, k := range keys {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil, false
		}
		if raw, ok = obj[k]; !ok {
			return nil, false
		}
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber() // every digit
	if d.Decode(&list) != nil || list == nil {
		return nil, false
	}
	return list, true
}

// evalBool evaluates a `when`.
func evalBool(src string, vars map[string]any) (bool, error) {
	v, err := eval(src, cel.BoolType, vars)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("when: %q gave %v, not true or false", src, v)
	}
	return b, nil
}

// evalList evaluates a `for_each` into JSON values.
func evalList(src string, vars map[string]any) ([]any, error) {
	v, err := eval(src, cel.ListType(cel.DynType), vars)
	if err != nil {
		return nil, err
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("for_each: %q gave %v, not a list", src, v)
	}
	return list, nil
}

func eval(src string, want *cel.Type, vars map[string]any) (any, error) {
	c, err := program(src, want)
	if err != nil {
		return nil, err
	}
	out, _, err := c.prg.Eval(vars)
	if err != nil {
		// TaskManager's PHP deployment hands an empty object back as []:
		// `has(params.opts.x)` fails on it. Where an expression fails, it
		// is evaluated again with the empty lists it reads as objects
		// (only those) empty objects, and that answer is taken if there
		// is one.
		if asObjects, changed := emptyListsAt(vars, c.objects); changed {
			if again, _, err2 := c.prg.Eval(asObjects); err2 == nil {
				out, err = again, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%q: %w", src, err)
	}
	native, err := out.ConvertToNative(reflect.TypeFor[any]())
	if err != nil {
		return nil, fmt.Errorf("%q: %w", src, err)
	}
	// Through JSON: CEL's maps and lists become plain JSON values, their
	// numbers json.Numbers (an int beyond 2^53 keeps every digit).
	b, err := json.Marshal(native)
	if err != nil {
		return nil, fmt.Errorf("%q: the value is not JSON: %w", src, err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err = d.Decode(&v)
	return v, err
}

// checkExpr compiles src for config loading and checks the steps it
// reads (steps.name, steps["a.b"]) run before the step.
func checkExpr(src string, want *cel.Type, before, all map[string]bool) error {
	checked, err := compileExpr(src, want)
	if err != nil {
		return fmt.Errorf("%q: %w", src, err)
	}
	c := refChecker{before: before, all: all}
	ast.PreOrderVisit(ast.NavigateAST(checked.NativeRep()), ast.NewExprVisitor(func(e ast.Expr) {
		switch e.Kind() {
		case ast.SelectKind:
			if op := e.AsSelect().Operand(); op.Kind() == ast.IdentKind && op.AsIdent() == "steps" {
				c.step(e.AsSelect().FieldName())
			}
		case ast.CallKind:
			call := e.AsCall()
			if call.FunctionName() != operators.Index || len(call.Args()) != 2 {
				return
			}
			m, k := call.Args()[0], call.Args()[1]
			if m.Kind() == ast.IdentKind && m.AsIdent() == "steps" && k.Kind() == ast.LiteralKind {
				if name, ok := k.AsLiteral().Value().(string); ok {
					c.step(name)
				}
			}
		}
	}))
	if c.err != nil {
		return fmt.Errorf("%q: %w", src, c.err)
	}
	return nil
}
