package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// Step params are Go templates over two roots: .params (the task's params)
// and .steps (the results of earlier steps, by step name). A step whose
// name has dots, such as the default name example.uppercase, is read with
// index: {{ index .steps "example.uppercase" "uppercase" }}.
//
// Numbers stay exact: 1234567 renders as 1234567, and 9007199254740993
// (beyond what a float64 holds) keeps every digit (see number). A string
// that is a single action keeps the JSON type of its value (a number, an
// object).

// valueFunc is the function the renderer appends to a single-action
// template to capture its value instead of printing it.
const valueFunc = "tmbridge_value"

// parseTemplate parses one template string. whole reports a string that is
// one action (blanks around it aside), whose value keeps its JSON type.
func parseTemplate(s string, capture func(any) string) (t *template.Template, whole bool, err error) {
	t, err = template.New("params").Option("missingkey=error").
		Funcs(template.FuncMap{valueFunc: capture, chargeFunc: noCharge, chargeEscFunc: noCharge, chargeCmpFunc: noCharge, chargeOutFunc: noCharge, chargeRangeFunc: noCharge,
			tickFunc: func() string { return "" }}).Parse(s)
	if err != nil {
		return nil, false, err
	}
	var action *parse.ActionNode
	for _, n := range t.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			if len(bytes.TrimSpace(n.Text)) > 0 {
				return t, false, nil
			}
		case *parse.ActionNode:
			if action != nil || len(n.Pipe.Decl) > 0 {
				return t, false, nil
			}
			action = n
		default:
			return t, false, nil
		}
	}
	if action == nil {
		return t, false, nil
	}
	// {{ pipeline }} becomes {{ pipeline | tmbridge_value }}.
	call := &parse.CommandNode{NodeType: parse.NodeCommand, Pos: action.Pos,
		Args: []parse.Node{parse.NewIdentifier(valueFunc).SetTree(t.Tree).SetPos(action.Pos)}}
	action.Pipe.Cmds = append(action.Pipe.Cmds, call)
	return t, true, nil
}

// A render's work is bounded, as its output is (boundedBuilder): it runs
// in workflow code, on data the task chooses, and a workflow task that
// runs on past a second is taken for a deadlock and fails again at every
// retry. Work is counted in units of about a nanosecond of a slow core,
// deterministically, from what the template does (countWork rewrites its
// tree so that it says so): each pass of a range; the sort of a map's
// keys, ranged over or printed; each value printed or captured whole;
// each call of a function whose work grows with its arguments
// (workFuncs), by their size. The renders of one workflow task share
// maxTemplateWork (pipeline.templateWork); a step's fallbacks get their
// own (pipeline.freshBudgets).
const (
	chargeFunc      = "tmbridge_charge"       // a value formatted (print, printf)
	chargeEscFunc   = "tmbridge_charge_esc"   // a value escaped (html, js, urlquery)
	chargeCmpFunc   = "tmbridge_charge_cmp"   // a value compared (eq, lt …)
	chargeOutFunc   = "tmbridge_charge_out"   // a value printed by an action
	tickFunc        = "tmbridge_tick"         // a pass of a range
	chargeRangeFunc = "tmbridge_charge_range" // a value ranged over: a map's sort

	// Costs, measured on a 2-core machine, rounded up.
	costPass        = 500  // a pass of a range
	costSortStep    = 100  // a step of sorting a map's keys (n·log₂n of them)
	costOut         = 500  // an action printing a value
	costCall        = 2000 // a call of a workFunc, per argument
	costByte        = 4    // a byte formatted or printed
	costEscByte     = 32   // a byte escaped (html of "<": 33 ns)
	cmpBytesPerUnit = 4    // bytes compared
	maxTemplateWork = 400_000_000
)

// workFuncs are text/template's builtins whose work grows with the size of
// their arguments (index, slice, len, and, or and not do not), and the
// charge each argument takes.
var workFuncs = map[string]string{"eq": chargeCmpFunc, "ne": chargeCmpFunc, "lt": chargeCmpFunc, "le": chargeCmpFunc, "gt": chargeCmpFunc, "ge": chargeCmpFunc,
	"html": chargeEscFunc, "js": chargeEscFunc, "urlquery": chargeEscFunc, "print": chargeFunc, "printf": chargeFunc, "println": chargeFunc}

func noCharge(v any) any { return v }

// errTemplateWork: a render passed maxTemplateWork.
var errTemplateWork = fmt.Errorf("the templates of this workflow task did more than %d units of work (a range's passes, values printed, compared or escaped): over large params?", maxTemplateWork)

// countWork rewrites node so that the render charges its work: f x y, for
// a workFunc f, becomes f (charge x) (charge y) (constants are left as
// they are: they cost little, and keep their untyped meaning), x | f
// becomes x | charge | f, a printed {{ x }} becomes {{ x | charge }}, and
// each range's body begins with {{ tmbridge_tick }}.
func countWork(node parse.Node) {
	call := func(name string, pos parse.Pos, args ...parse.Node) *parse.CommandNode {
		return &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: append([]parse.Node{parse.NewIdentifier(name).SetPos(pos)}, args...)}
	}
	switch n := node.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, e := range n.Nodes {
				countWork(e)
			}
		}
	case *parse.ActionNode:
		countWork(n.Pipe)
		last := n.Pipe.Cmds[len(n.Pipe.Cmds)-1]
		if id, ok := last.Args[0].(*parse.IdentifierNode); len(n.Pipe.Decl) == 0 && (!ok || id.Ident != valueFunc) {
			n.Pipe.Cmds = append(n.Pipe.Cmds, call(chargeOutFunc, n.Pos)) // printed
		}
	case *parse.IfNode:
		countWork(n.Pipe)
		countWork(n.List)
		countWork(n.ElseList)
	case *parse.RangeNode:
		countWork(n.Pipe)
		n.Pipe.Cmds = append(n.Pipe.Cmds, call(chargeRangeFunc, n.Pos)) // a map's keys are sorted first
		countWork(n.List)
		countWork(n.ElseList)
		tick := &parse.ActionNode{NodeType: parse.NodeAction, Pos: n.Pos, Pipe: &parse.PipeNode{NodeType: parse.NodePipe, Pos: n.Pos, Cmds: []*parse.CommandNode{call(tickFunc, n.Pos)}}}
		if n.List == nil {
			n.List = &parse.ListNode{NodeType: parse.NodeList, Pos: n.Pos}
		}
		n.List.Nodes = append([]parse.Node{tick}, n.List.Nodes...)
	case *parse.WithNode:
		countWork(n.Pipe)
		countWork(n.List)
		countWork(n.ElseList)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		var cmds []*parse.CommandNode
		for i, cmd := range n.Cmds {
			for _, a := range cmd.Args {
				switch a := a.(type) {
				case *parse.PipeNode:
					countWork(a)
				case *parse.ChainNode:
					countWork(a.Node)
				}
			}
			var charge string
			if id, ok := cmd.Args[0].(*parse.IdentifierNode); ok {
				charge = workFuncs[id.Ident]
			}
			if charge == "" {
				cmds = append(cmds, cmd)
				continue
			}
			for j, a := range cmd.Args[1:] {
				switch a.(type) {
				case *parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode:
					continue
				}
				cmd.Args[j+1] = &parse.PipeNode{NodeType: parse.NodePipe, Pos: a.Position(), Cmds: []*parse.CommandNode{call(charge, a.Position(), a)}}
			}
			if i > 0 { // the value piped in is an argument too
				cmds = append(cmds, call(charge, cmd.Pos))
			}
			cmds = append(cmds, cmd)
		}
		n.Cmds = cmds
	}
}

// untangle takes countWork's calls out of an error's text, which quotes
// the template's nodes: (tmbridge_charge x) is x again.
func untangle(msg string) string {
	for _, name := range []string{chargeCmpFunc, chargeEscFunc, chargeOutFunc, chargeFunc} {
		for {
			i := strings.Index(msg, "("+name+" ")
			if i < 0 {
				break
			}
			depth, j := 0, i
			for ; j < len(msg); j++ {
				if msg[j] == '(' {
					depth++
				} else if msg[j] == ')' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			if j == len(msg) {
				break
			}
			msg = msg[:i] + msg[i+len(name)+2:j] + msg[j+1:]
		}
		msg = strings.ReplaceAll(msg, " | "+name, "")
	}
	msg = strings.ReplaceAll(msg, "<"+chargeRangeFunc+">", "<range>")
	return strings.ReplaceAll(msg, "{{"+tickFunc+"}}", "")
}

// workBudget is what the renders of a workflow task may still do
// (maxTemplateWork at its start); nil: no bound (a run started before the
// bound, changeTemplateWork).
type workBudget struct{ left int }

func (b *workBudget) spend(units int) error {
	if b.left -= units; b.left < 0 {
		return errTemplateWork
	}
	return nil
}

func (b *workBudget) funcs() template.FuncMap {
	charge := func(base, perByte int) func(v any) (any, error) {
		return func(v any) (any, error) {
			return v, b.spend(base + perByte*valueBytes(v, b.left/perByte+1))
		}
	}
	return template.FuncMap{
		chargeFunc:    charge(costCall, costByte),
		chargeEscFunc: charge(costCall, costEscByte),
		chargeOutFunc: charge(costOut, costByte),
		chargeCmpFunc: func(v any) (any, error) {
			return v, b.spend(costCall + valueBytes(v, cmpBytesPerUnit*(b.left+1))/cmpBytesPerUnit)
		},
		tickFunc: func() (string, error) { return "", b.spend(costPass) },
		chargeRangeFunc: func(v any) (any, error) {
			if m, ok := v.(map[string]any); ok {
				return v, b.spend(costSortStep * len(m) * bits.Len(uint(len(m))))
			}
			return v, nil
		},
	}
}

// valueBytes is about how many bytes v, a template's data, holds, as the
// work of printing it goes: a string's bytes, 40 for any other value
// (formatting one is some 40 times the work of copying a byte), and a
// map key's share of sorting the keys; it stops counting past budget.
func valueBytes(v any, budget int) int {
	n := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			n += len(x) + 1
		case []any:
			n += 40
			for _, e := range x {
				if n > budget {
					return
				}
				walk(e)
			}
		case map[string]any:
			// Printed or written as JSON, its keys are sorted first.
			sort := 40 + costSortStep*bits.Len(uint(len(x)))/costByte
			n += 40
			for k, e := range x {
				if n > budget {
					return
				}
				n += len(k) + sort
				walk(e)
			}
		default:
			n += 40
		}
	}
	walk(v)
	return n
}

// render resolves the templates in v's string values against data.
func render(v any, data map[string]any, work *workBudget) (any, error) {
	return renderMax(v, data, work, MaxStepParamsBytes)
}

// renderMax is render with output bounded at max bytes per string.
func renderMax(v any, data map[string]any, work *workBudget, max int) (any, error) {
	return mapStrings(v, func(s string) (any, error) { return renderOneMax(s, data, work, max) })
}

// renderTolerant is render where a template that fails is rendered again
// with the empty lists it reads as objects (only those: templateObjects)
// empty objects: the PHP deployment hands {} back as [], on which
// `index .params.opts "x"` fails. Each string is rendered on its own.
func renderTolerant(v any, data map[string]any, work *workBudget, max int) (any, error) {
	return mapStrings(v, func(s string) (any, error) {
		out, err := renderOneMax(s, data, work, max)
		if err == nil {
			return out, nil
		}
		t, _, perr := parseTemplate(s, func(any) string { return "" })
		if perr != nil {
			return nil, err
		}
		asObjects, changed := emptyListsAt(data, templateObjects(t.Root))
		if !changed {
			return nil, err
		}
		return renderOneMax(s, asObjects, work, max)
	})
}

// renderOneMax renders one template string against data, its output
// bounded at max bytes and its work charged to work (nil: no bound).
func renderOneMax(s string, data map[string]any, work *workBudget, max int) (any, error) {
	var value any
	t, whole, err := parseTemplate(s, func(v any) string { value = v; return "" })
	if err != nil {
		return nil, err
	}
	if work != nil {
		countWork(t.Root)
		t.Funcs(work.funcs())
	}
	b := boundedBuilder{max: max}
	if err := t.Execute(&b, data); err != nil {
		if work != nil && work.left < 0 {
			return nil, errTemplateWork
		}
		if errors.Is(err, errRenderTooBig) {
			return nil, err
		}
		return nil, errors.New(untangle(err.Error()))
	}
	if whole {
		if work != nil { // the marshal below is work
			if err := work.spend(costOut + costByte*valueBytes(value, work.left/costByte+1)); err != nil {
				return nil, err
			}
		}
		if _, err := json.Marshal(value); err != nil {
			return nil, fmt.Errorf("template value is not JSON: %w", err)
		}
		return value, nil
	}
	return b.String(), nil
}

// boundedBuilder is a strings.Builder that refuses to grow past max:
// a template that repeats a large part stops there, not once it rendered
// it all (its size is the task's to choose).
type boundedBuilder struct {
	strings.Builder
	max int
}

func (b *boundedBuilder) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errRenderTooBig
	}
	return b.Builder.Write(p)
}

// decodeJSON decodes raw for templates: a number becomes a number (a
// float64 that prints as JSON writes it), or stays a json.Number (its
// digits) when a float64 would lose some.
func decodeJSON(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return numbers(v), nil
}

// numbers replaces the json.Numbers in v that a float64 holds exactly.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x
		}
		if i, err := x.Int64(); err == nil && (i > 1<<53 || i < -(1<<53)) {
			return x // an integer a float64 would round: keep every digit
		} else if err != nil && !strings.ContainsAny(string(x), ".eE") {
			return x // an integer beyond int64
		}
		return number(f)
	}
	return v
}

// number is a JSON number in a template. It compares, tests and formats
// (printf "%.2f") as a float64, and prints as JSON writes it: 1234567, not
// 1.234567e+06.
type number float64

// String formats n as encoding/json does.
func (n number) String() string {
	f := float64(n)
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// mapStrings rebuilds v with fn applied to every string holding "{{"; an
// error names where it happened: a *pathError (key.list[2]: …).
func mapStrings(v any, fn func(string) (any, error)) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range slices.Sorted(maps.Keys(x)) { // the first error is always the same one
			r, err := mapStrings(x[k], fn)
			if err != nil {
				return nil, at("."+k, err)
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := mapStrings(e, fn)
			if err != nil {
				return nil, at(fmt.Sprintf("[%d]", i), err)
			}
			out[i] = r
		}
		return out, nil
	case string:
		if !strings.Contains(x, "{{") {
			return x, nil
		}
		return fn(x)
	default:
		return v, nil
	}
}

// pathError is an error at a path in params: .key[2].other.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return strings.TrimPrefix(e.path, ".") + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// at puts err at seg, before the path it already has.
func at(seg string, err error) error {
	if pe, ok := err.(*pathError); ok {
		return &pathError{path: seg + pe.path, err: pe.err}
	}
	return &pathError{path: seg, err: err}
}

// checkTemplates parses every template of params (at key where) and checks
// what each reads: roots (.params, .steps, and .item, .index or .error
// where the step has them), and .steps of a step that runs before this one
// (before), so a typo or a forward reference fails at config load. all
// holds every step name of the type.
func checkTemplates(where string, params map[string]any, roots []string, before, all map[string]bool) error {
	_, err := mapStrings(params, func(s string) (any, error) {
		t, _, err := parseTemplate(s, func(any) string { return "" })
		if err != nil {
			return nil, err
		}
		c := refChecker{before: before, all: all, roots: roots}
		c.walk(t.Root, true)
		if c.err != nil {
			return nil, fmt.Errorf("%q: %w", s, c.err)
		}
		return s, nil
	})
	if err != nil {
		return at("."+where, err)
	}
	return nil
}

// refChecker walks a template's tree for references to .params and .steps.
type refChecker struct {
	before, all map[string]bool
	roots       []string // the names a template reads; nil: params and steps
	err         error
}

// walk checks node; atRoot is false inside range and with, where dot is
// no longer the template's data (only $.steps… is checked there).
func (c *refChecker) walk(node parse.Node, atRoot bool) {
	switch n := node.(type) {
	case *parse.ListNode:
		if n != nil {
			for _, e := range n.Nodes {
				c.walk(e, atRoot)
			}
		}
	case *parse.ActionNode:
		c.pipe(n.Pipe, atRoot)
	case *parse.IfNode:
		c.pipe(n.Pipe, atRoot)
		c.walk(n.List, atRoot)
		c.walk(n.ElseList, atRoot)
	case *parse.RangeNode:
		c.pipe(n.Pipe, atRoot)
		c.walk(n.List, false)
		c.walk(n.ElseList, atRoot)
	case *parse.WithNode:
		c.pipe(n.Pipe, atRoot)
		c.walk(n.List, false)
		c.walk(n.ElseList, atRoot)
	case *parse.TemplateNode:
		c.fail(errors.New("{{ template }} is not available in step params"))
	}
}

func (c *refChecker) pipe(p *parse.PipeNode, atRoot bool) {
	if p == nil {
		return
	}
	for _, cmd := range p.Cmds {
		if name, ok := indexedStep(cmd, atRoot); ok {
			c.step(name)
		}
		for _, arg := range cmd.Args {
			switch a := arg.(type) {
			case *parse.FieldNode:
				if atRoot {
					c.path(a.Ident)
				}
			case *parse.VariableNode:
				if a.Ident[0] == "$" && len(a.Ident) > 1 {
					c.path(a.Ident[1:])
				}
			case *parse.PipeNode:
				c.pipe(a, atRoot)
			case *parse.ChainNode:
				if inner, ok := a.Node.(*parse.PipeNode); ok {
					c.pipe(inner, atRoot)
				}
			}
		}
	}
}

// indexedStep recognises {{ index .steps "name" … }}.
func indexedStep(cmd *parse.CommandNode, atRoot bool) (string, bool) {
	if len(cmd.Args) < 3 {
		return "", false
	}
	if id, ok := cmd.Args[0].(*parse.IdentifierNode); !ok || id.Ident != "index" {
		return "", false
	}
	name, ok := cmd.Args[2].(*parse.StringNode)
	if !ok {
		return "", false
	}
	switch m := cmd.Args[1].(type) {
	case *parse.FieldNode:
		return name.Text, atRoot && slices.Equal(m.Ident, []string{"steps"})
	case *parse.VariableNode:
		return name.Text, slices.Equal(m.Ident, []string{"$", "steps"})
	}
	return "", false
}

func (c *refChecker) path(ident []string) {
	switch {
	case ident[0] == "steps":
		if len(ident) > 1 {
			c.stepPath(ident[1:])
		}
	case slices.Contains(c.roots, ident[0]):
	default:
		extra := ""
		if more := slices.DeleteFunc(slices.Clone(c.roots), func(r string) bool { return r == "params" || r == "steps" }); len(more) > 0 {
			extra = ", and here ." + strings.Join(more, ", .")
		}
		c.fail(fmt.Errorf(".%s: a template reads .params (the task's params) and .steps (earlier steps' results)%s", ident[0], extra))
	}
}

// stepPath checks .steps.a.b…, telling a dotted step name apart.
func (c *refChecker) stepPath(ident []string) {
	name := ident[0]
	if c.all[name] {
		c.step(name)
		return
	}
	for n := len(ident); n > 1; n-- {
		if dotted := strings.Join(ident[:n], "."); c.all[dotted] {
			c.fail(fmt.Errorf(".steps.%s: step %q has dots in its name, which a template path cannot hold: write {{ index .steps %q }} (then the field names), or give the step a name without dots",
				strings.Join(ident, "."), dotted, dotted))
			return
		}
	}
	c.step(name)
}

func (c *refChecker) step(name string) {
	switch {
	case c.before[name]:
	case c.all[name]:
		c.fail(fmt.Errorf("step %q runs later or at the same time: a template reads only the steps before its own", name))
	default:
		known := slices.Sorted(maps.Keys(c.before))
		if len(known) == 0 {
			c.fail(fmt.Errorf("no step %q: no step runs before this one", name))
			return
		}
		c.fail(fmt.Errorf("no step %q (the steps before this one: %s)", name, strings.Join(known, ", ")))
	}
}

func (c *refChecker) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// errRenderTooBig: a template's output passed MaxStepParamsBytes.
var errRenderTooBig = fmt.Errorf("rendered params pass the %d bytes a step accepts", MaxStepParamsBytes)
