package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
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

// compiled is a program and what it reads as objects (celObjects).
type compiled struct {
	prg     cel.Program
	objects []objectPath
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
	c := compiled{prg: p, objects: celObjects(checked)}
	programs.Store(src, c)
	return c, nil
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
			if name, ok := stringLiteral(k); ok && m.Kind() == ast.IdentKind && m.AsIdent() == "steps" {
				c.step(name)
			}
		}
	}))
	if c.err != nil {
		return fmt.Errorf("%q: %w", src, c.err)
	}
	return nil
}
