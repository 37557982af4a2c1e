package workflows

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// The step template renderer of runs started before the exact-templates
// change (changeExactTemplates, version 1): numbers as float64, and
// only a plain field path keeps its JSON type. Kept so that those runs go
// on rendering as they began; new runs use render.

// legacyWholeAction matches a string that is exactly one field path action.
var legacyWholeAction = regexp.MustCompile(`^\s*\{\{-?\s*\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\s*-?\}\}\s*$`)

// legacyDecode decodes JSON as runs before exact templates did.
func legacyDecode(raw []byte) (any, error) {
	var v any
	err := json.Unmarshal(raw, &v)
	return v, err
}

// legacyRender resolves the templates in v's string values against data.
func legacyRender(v any, data map[string]any) (any, error) {
	return mapStrings(v, func(s string) (any, error) {
		if m := legacyWholeAction.FindStringSubmatch(s); m != nil {
			return legacyLookup(data, strings.Split(m[1], "."))
		}
		t, err := template.New("params").Option("missingkey=error").Parse(s)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return nil, err
		}
		return b.String(), nil
	})
}

func legacyLookup(v any, path []string) (any, error) {
	for i, key := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("template: .%s is not an object", strings.Join(path[:i], "."))
		}
		if v, ok = m[key]; !ok {
			return nil, fmt.Errorf("template: .%s has no value", strings.Join(path[:i+1], "."))
		}
	}
	return v, nil
}
