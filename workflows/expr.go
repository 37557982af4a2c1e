package workflows

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"google.golang.org/protobuf/types/known/structpb"
)

// A step's `when` and `for_each` are CEL expressions
// (https://cel.dev) over two variables: params (the task's params) and
// steps (the results of the steps before, by name). CEL has no side
// effects and always ends, so it runs in workflow code; it is compiled and
// type-checked when the config loads.

// exprCostLimit bounds one evaluation (CEL's cost units: about one per
// value visited), and exprTimeout its time, so an expression over large
// params cannot stall a workflow task (the SDK takes a workflow task that
// runs over a second for a deadlock). An evaluation runs in a side effect:
// its value, or that it took too long, is recorded, and a replay reads it.
const exprCostLimit = 1_000_000

// exprTimeout bounds one evaluation; exprTaskBudget bounds the time of all
// the expressions one workflow task evaluates (skipped steps, a parallel
// group's whens): each is given what is left, at most exprTimeout.
const (
	exprTimeout    = 250 * time.Millisecond
	exprTaskBudget = 300 * time.Millisecond
)

// maxExprValueBytes bounds an expression's value as JSON, recorded in one
// history event: Temporal refuses a payload over 2 MiB (maxPayloadBytes).
const maxExprValueBytes = 1_500_000

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
	// OptOptimize compiles a constant regular expression once, not at
	// every call of matches; interrupts are checked in comprehensions.
	p, err := exprEnv().Program(checked, cel.CostLimit(exprCostLimit),
		cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
	if err != nil {
		return compiled{}, err
	}
	c := compiled{prg: p, objects: celObjects(checked)}
	programs.Store(src, c)
	return c, nil
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

// errExprTimeout: an evaluation ran past its time.
var errExprTimeout = errors.New("expression took too long")

// evalWithin evaluates c, waiting at most d: CEL checks for an interrupt
// only in comprehensions, so a single long call (matches over a large
// string) is left to finish on its own, its value dropped.
//
// TaskManager's PHP deployment hands an empty object back as []:
// `has(params.opts.x)` fails on it. Where an expression fails, it is
// evaluated again with the empty lists it reads as objects (only those)
// empty objects, and that answer is taken if there is one.
func (c compiled) evalWithin(vars map[string]any, d time.Duration) (ref.Val, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	type result struct {
		val ref.Val
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				done <- result{err: fmt.Errorf("panicked: %v", r)}
			}
		}()
		out, _, err := c.prg.ContextEval(ctx, vars)
		if err != nil && ctx.Err() == nil {
			if asObjects, changed := emptyListsAt(vars, c.objects); changed {
				if again, _, err2 := c.prg.ContextEval(ctx, asObjects); err2 == nil {
					out, err = again, nil
				}
			}
		}
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() == context.DeadlineExceeded {
			return nil, errExprTimeout
		}
		return r.val, r.err
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return nil, errExprTimeout
		}
		r := <-done // cancelled by the goroutine itself: it has answered
		return r.val, r.err
	}
}

// evalBool evaluates a `when`.
func evalBool(src string, vars map[string]any, limit time.Duration) (bool, error) {
	v, err := eval(src, cel.BoolType, vars, limit)
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
func evalList(src string, vars map[string]any, limit time.Duration) ([]any, error) {
	v, err := eval(src, cel.ListType(cel.DynType), vars, limit)
	if err != nil {
		return nil, err
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("for_each: %q gave %v, not a list", src, v)
	}
	return list, nil
}

// eval evaluates src, waiting at most limit (exprTimeout, or less when
// the workflow task's time for expressions is nearly spent).
func eval(src string, want *cel.Type, vars map[string]any, limit time.Duration) (any, error) {
	c, err := program(src, want)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("%q not evaluated: the expressions of this workflow task took their %s already (over large params?)", src, exprTaskBudget)
	}
	out, err := c.evalWithin(vars, limit)
	if errors.Is(err, errExprTimeout) && limit < exprTimeout {
		return nil, fmt.Errorf("%q took longer than %s, what was left of the %s the expressions of a workflow task may take (over large params?)", src, limit.Round(time.Millisecond), exprTaskBudget)
	}
	if errors.Is(err, errExprTimeout) {
		return nil, fmt.Errorf("%q took longer than %s (over large params?)", src, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("%q: %w", src, err)
	}
	native, err := out.ConvertToNative(reflect.TypeFor[any]())
	if err != nil {
		return nil, fmt.Errorf("%q: %w", src, err)
	}
	// A value that shares a large part many times ([i, params.opts] for
	// each id) is small in CEL, and as JSON may be gigabytes: measured
	// first, within the bound.
	native, n, err := jsonValue(native, maxExprValueBytes+1)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", src, err)
	}
	if n > maxExprValueBytes {
		return nil, fmt.Errorf("%q gave over %d bytes of JSON, more than a run's history takes in one event", src, maxExprValueBytes)
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

// jsonValue returns v, CEL's native value, made JSON's: its maps' keys as
// strings (a CEL map literal, {"id": i}, is a map[any]any, which
// encoding/json refuses; two keys that read the same, 1 and "1", are an
// error) and CEL's null as nil (its NullValue would be written 0); and how
// many bytes its JSON takes at most, as encoding/json escapes and encodes
// it. It stops, past budget: the walk is bounded by budget, whatever v
// shares.
func jsonValue(v any, budget int) (any, int, error) {
	n := 0
	var err error
	var walk func(v any) any
	// object is a JSON object of the pairs, keys as JSON writes them.
	object := func(pairs iter.Seq2[string, any], size int) any {
		n++
		out := make(map[string]any, min(size, budget))
		for k, e := range pairs {
			if n > budget {
				break
			}
			if _, dup := out[k]; dup {
				err = fmt.Errorf("a map has two keys that read %q as JSON", k)
				return nil
			}
			n += jsonStringBytes(k) + 1
			out[k] = walk(e)
		}
		return out
	}
	walk = func(v any) any {
		if n > budget || err != nil {
			return nil
		}
		switch x := v.(type) {
		case string:
			n += jsonStringBytes(x)
		case []byte:
			n += 4*((len(x)+2)/3) + 2 // base64
		case structpb.NullValue:
			n += 4
			return nil
		case []any:
			n++
			out := make([]any, 0, min(len(x), budget))
			for _, e := range x {
				if n > budget {
					break
				}
				out = append(out, walk(e))
				n++
			}
			return out
		case map[string]any:
			return object(maps.All(x), len(x))
		case map[any]any:
			return object(func(yield func(string, any) bool) {
				for k, e := range x {
					if !yield(fmt.Sprint(k), e) {
						return
					}
				}
			}, len(x))
		default: // numbers, bools, null, and what json.Marshal says no to
			n += 24
		}
		return v
	}
	v = walk(v)
	return v, n, err
}

// jsonStringBytes is how many bytes encoding/json writes for s: its
// quotes, 2 for " and \ and the short escapes (\n, \t …), 6 for what it
// writes as a \u escape (<, >, &, other control characters, U+2028,
// U+2029, and a byte that is not UTF-8, as \ufffd).
func jsonStringBytes(s string) int {
	n := 2
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"', r == '\\', r == '\n', r == '\r', r == '\t', r == '\b', r == '\f':
			n += 2
		case r == utf8.RuneError && size == 1, r < 0x20, r == '<', r == '>', r == '&', r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
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
			if call.FunctionName() == "matches" {
				// A pattern from the task's data could take seconds over a
				// large string, in one call no timeout interrupts.
				args := call.Args()
				if pattern := args[len(args)-1]; pattern.Kind() != ast.LiteralKind {
					c.fail(errors.New("matches takes a constant pattern (a string in the expression), not one from params or steps"))
				}
				return
			}
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
