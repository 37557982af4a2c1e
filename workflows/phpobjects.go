package workflows

import (
	"maps"
	"slices"
	"text/template/parse"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
)

// TaskManager's PHP deployment decodes JSON objects into PHP arrays and
// writes an empty one back as []: a task's params {"opts": {}} come back
// as {"opts": []}. Where a `when`, a `for_each` or a step's params
// template fails on such a value read as an object (has(params.opts.x),
// index .params.opts "x"), it is evaluated again with the empty lists it
// reads as objects made empty objects: only those, so that a real []
// elsewhere stays a list.

// objectPath is a value an expression or template reads as an object: at
// path from the root (params, steps), or, deep, any value below path
// (the elements of a list it ranges over, an item it indexes by number).
type objectPath struct {
	path []string
	deep bool
}

// anchor is where a value an expression or template reads comes from; ok
// is false when it is not known (a function's result, a variable).
type anchor struct {
	objectPath
	ok bool
}

func rootAnchor(path ...string) anchor { return anchor{objectPath{path: path}, true} }

// field is a's field or string key k.
func (a anchor) field(k string) anchor {
	if !a.ok || a.deep {
		return a
	}
	return rootAnchor(append(slices.Clone(a.path), k)...)
}

// below is any value below a: an element, an item indexed by number.
func (a anchor) below() anchor {
	if a.ok {
		a.deep = true
	}
	return a
}

// objectReads collects the objectPaths read, once each.
type objectReads []objectPath

func (r *objectReads) add(a anchor) {
	if !a.ok || (len(a.path) == 0 && !a.deep) { // the root is an object
		return
	}
	if !slices.ContainsFunc(*r, func(p objectPath) bool { return p.deep == a.deep && slices.Equal(p.path, a.path) }) {
		*r = append(*r, objectPath{slices.Clone(a.path), a.deep})
	}
}

// celObjects returns what an expression reads as objects: the operands of
// its field selections (params.opts in has(params.opts.x)) and string
// keys (params["opts"]["x"]), through comprehension variables
// (params.items.all(i, has(i.opts.x)) reads below params.items).
func celObjects(checked *cel.Ast) []objectPath {
	var reads objectReads
	var from func(e ast.Expr, vars map[string]anchor) anchor
	from = func(e ast.Expr, vars map[string]anchor) anchor {
		switch e.Kind() {
		case ast.IdentKind:
			id := e.AsIdent()
			if a, ok := vars[id]; ok {
				return a
			}
			if id == "params" || id == "steps" {
				return rootAnchor(id)
			}
		case ast.SelectKind:
			return from(e.AsSelect().Operand(), vars).field(e.AsSelect().FieldName())
		case ast.CallKind:
			if call := e.AsCall(); call.FunctionName() == operators.Index && len(call.Args()) == 2 {
				base := from(call.Args()[0], vars)
				if key, ok := stringLiteral(call.Args()[1]); ok {
					return base.field(key)
				}
				return base.below()
			}
		}
		return anchor{}
	}
	var walk func(e ast.Expr, vars map[string]anchor)
	walk = func(e ast.Expr, vars map[string]anchor) {
		switch e.Kind() {
		case ast.SelectKind:
			reads.add(from(e.AsSelect().Operand(), vars))
			walk(e.AsSelect().Operand(), vars)
		case ast.CallKind:
			call := e.AsCall()
			if call.FunctionName() == operators.Index && len(call.Args()) == 2 {
				if _, ok := stringLiteral(call.Args()[1]); ok {
					reads.add(from(call.Args()[0], vars))
				}
			}
			if call.IsMemberFunction() {
				walk(call.Target(), vars)
			}
			for _, arg := range call.Args() {
				walk(arg, vars)
			}
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, vars)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				walk(en.AsMapEntry().Key(), vars)
				walk(en.AsMapEntry().Value(), vars)
			}
		case ast.ComprehensionKind:
			c := e.AsComprehension()
			walk(c.IterRange(), vars)
			walk(c.AccuInit(), vars)
			inner := maps.Clone(vars)
			if inner == nil {
				inner = map[string]anchor{}
			}
			elems := from(c.IterRange(), vars).below()
			for _, v := range []string{c.IterVar(), c.IterVar2(), c.AccuVar()} {
				if v != "" {
					delete(inner, v)
				}
			}
			inner[c.IterVar()] = elems
			if c.HasIterVar2() {
				inner[c.IterVar2()] = elems
			}
			walk(c.LoopCondition(), inner)
			walk(c.LoopStep(), inner)
			walk(c.Result(), inner)
		}
	}
	walk(checked.NativeRep().Expr(), nil)
	return reads
}

func stringLiteral(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().Value().(string)
	return s, ok
}

// templateObjects returns what a template reads as objects: the operands
// of its fields (.params.opts in .params.opts.x) and of index with string
// keys, from the root ($), from dot as with rebinds it, from variables,
// and below what range iterates over.
func templateObjects(root parse.Node) []objectPath {
	var reads objectReads
	// argFrom is where an argument's value comes from, reading fields on
	// the way.
	argFrom := func(n parse.Node, dot anchor, vars map[string]anchor) anchor {
		var base anchor
		var fields []string
		switch n := n.(type) {
		case *parse.DotNode:
			return dot
		case *parse.FieldNode:
			base, fields = dot, n.Ident
		case *parse.VariableNode:
			if n.Ident[0] == "$" {
				base = rootAnchor()
			} else {
				base = vars[n.Ident[0]]
			}
			fields = n.Ident[1:]
		default:
			return anchor{}
		}
		for _, f := range fields {
			reads.add(base)
			base = base.field(f)
		}
		return base
	}
	var walkPipe func(p *parse.PipeNode, dot anchor, vars map[string]anchor) anchor
	// cmdFrom is where a command's value comes from: its one argument, or
	// index over one.
	cmdFrom := func(c *parse.CommandNode, dot anchor, vars map[string]anchor) anchor {
		if id, ok := c.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" && len(c.Args) > 1 {
			base := argFrom(c.Args[1], dot, vars)
			for _, k := range c.Args[2:] {
				if key, ok := k.(*parse.StringNode); ok {
					reads.add(base)
					base = base.field(key.Text)
				} else {
					base = base.below()
				}
			}
			return base
		}
		var last anchor
		for _, a := range c.Args {
			if p, ok := a.(*parse.PipeNode); ok {
				last = walkPipe(p, dot, vars)
			} else {
				last = argFrom(a, dot, vars)
			}
		}
		if len(c.Args) != 1 {
			return anchor{}
		}
		return last
	}
	walkPipe = func(p *parse.PipeNode, dot anchor, vars map[string]anchor) anchor {
		if p == nil {
			return anchor{}
		}
		var last anchor
		for _, c := range p.Cmds {
			last = cmdFrom(c, dot, vars)
		}
		if len(p.Cmds) != 1 {
			return anchor{}
		}
		return last
	}
	// declare binds a pipeline's variables: the value, or (range) the
	// index then the element.
	declare := func(p *parse.PipeNode, value anchor, ranged bool, vars map[string]anchor) map[string]anchor {
		if p == nil || len(p.Decl) == 0 {
			return vars
		}
		vars = maps.Clone(vars)
		for i, d := range p.Decl {
			switch {
			case !ranged:
				vars[d.Ident[0]] = value
			case len(p.Decl) == 2 && i == 0:
				vars[d.Ident[0]] = anchor{} // the index
			default:
				vars[d.Ident[0]] = value.below()
			}
		}
		return vars
	}
	var walkList func(l *parse.ListNode, dot anchor, vars map[string]anchor)
	walkList = func(l *parse.ListNode, dot anchor, vars map[string]anchor) {
		if l == nil {
			return
		}
		for _, n := range l.Nodes {
			switch n := n.(type) {
			case *parse.ActionNode: // {{ $x := … }} holds to the end of the list
				vars = declare(n.Pipe, walkPipe(n.Pipe, dot, vars), false, vars)
			case *parse.IfNode:
				walkPipe(n.Pipe, dot, vars)
				walkList(n.List, dot, vars)
				walkList(n.ElseList, dot, vars)
			case *parse.WithNode:
				a := walkPipe(n.Pipe, dot, vars)
				walkList(n.List, a, declare(n.Pipe, a, false, vars))
				walkList(n.ElseList, dot, vars)
			case *parse.RangeNode:
				a := walkPipe(n.Pipe, dot, vars)
				walkList(n.List, a.below(), declare(n.Pipe, a, true, vars))
				walkList(n.ElseList, dot, vars)
			case *parse.ListNode:
				walkList(n, dot, vars)
			}
		}
	}
	if l, ok := root.(*parse.ListNode); ok {
		walkList(l, rootAnchor(), map[string]anchor{})
	}
	return reads
}

// emptyListsAt returns data with the empty lists paths read as objects
// made empty objects, copying only what it changes; changed says whether
// it changed any.
func emptyListsAt(data map[string]any, paths []objectPath) (out map[string]any, changed bool) {
	out = data
	for _, p := range paths {
		if v, ok := changeAt(out, p.path, func(v any) (any, bool) {
			if p.deep {
				return objectsBelow(v)
			}
			if l, isList := v.([]any); isList && len(l) == 0 {
				return map[string]any{}, true
			}
			return v, false
		}); ok {
			out, changed = v.(map[string]any), true
		}
	}
	return out, changed
}

// changeAt returns v with the value at path replaced by fn's, v copied on
// the way; ok is false when fn changed nothing (or nothing is there).
func changeAt(v any, path []string, fn func(any) (any, bool)) (any, bool) {
	if len(path) == 0 {
		return fn(v)
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		return nil, false
	}
	inner, found := m[path[0]]
	if !found {
		return nil, false
	}
	changed, ok := changeAt(inner, path[1:], fn)
	if !ok {
		return nil, false
	}
	out := maps.Clone(m)
	out[path[0]] = changed
	return out, true
}

// objectsBelow returns v with every empty list below it (not v itself) an
// empty object, copied where it changes.
func objectsBelow(v any) (any, bool) {
	conv := func(e any) (any, bool) {
		if l, isList := e.([]any); isList && len(l) == 0 {
			return map[string]any{}, true
		}
		return objectsBelow(e)
	}
	switch x := v.(type) {
	case map[string]any:
		var out map[string]any
		for k, e := range x {
			if c, ok := conv(e); ok {
				if out == nil {
					out = maps.Clone(x)
				}
				out[k] = c
			}
		}
		if out != nil {
			return out, true
		}
	case []any:
		var out []any
		for i, e := range x {
			if c, ok := conv(e); ok {
				if out == nil {
					out = slices.Clone(x)
				}
				out[i] = c
			}
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}
