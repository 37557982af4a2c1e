package bridge

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// configFile parses the config file as YAML, keeping what was written:
//
//   - a key left empty (`worker_id:`, or `temporal:` with every key under
//     it commented out) is as if unset, and the default stays, as for an
//     empty environment variable; not under types and type_defaults,
//     which have no defaults to keep;
//   - a number written otherwise than in plain decimal, as Go writes it
//     (0123, 0x1F, 1e5, 1_000, 1.50, .inf, an integer over 64 bits), keeps
//     its text: a string key (api_key: 0123) gets "0123", not the number
//     YAML reads (83), and a number key reads the text in decimal or
//     refuses it.
//
// Params (a step's, an enqueue step's) are a task's data, read as YAML
// reads them. keepEmpty are the keys (dotted paths) an empty value sets
// (workflow_id_prefix: workflow id = task id).
type configFile struct{ keepEmpty map[string]bool }

func (f configFile) Unmarshal(b []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Kind != yaml.MappingNode && doc.Content[0].Tag != "!!null" {
		// yaml's own error would quote the file's start: a key file given
		// as the config file would show part of the key.
		return nil, errors.New("the file is not a YAML map of keys (key: value lines): is it the right file?")
	}
	keepNumberText(&doc)
	var out map[string]any
	if err := doc.Decode(&out); err != nil {
		return nil, err
	}
	for key, v := range out {
		if key != "types" && key != "type_defaults" {
			v = f.withoutNulls(key, v)
		}
		if v == nil {
			delete(out, key)
		} else {
			out[key] = v
		}
	}
	return out, nil
}

// Marshal is not used (koanf's Parser interface).
func (configFile) Marshal(map[string]any) ([]byte, error) {
	return nil, fmt.Errorf("tmbridge does not write config files")
}

var (
	plainInt   = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
	plainFloat = regexp.MustCompile(`^-?(0|[1-9][0-9]*)\.[0-9]+$`)
)

// keepNumberText makes a string of each plain scalar YAML reads as a
// number or a bool that is not written as Go (and JSON) would write it,
// but in params.
func keepNumberText(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value != "params" {
				keepNumberText(n.Content[i+1])
			}
		}
		return
	}
	if n.Kind == yaml.ScalarNode && n.Style == 0 {
		switch n.ShortTag() {
		case "!!int":
			if _, err := strconv.ParseInt(n.Value, 10, 64); err != nil || !plainInt.MatchString(n.Value) {
				n.Tag = "!!str"
			}
		case "!!float":
			f, err := strconv.ParseFloat(n.Value, 64)
			if err != nil || !plainFloat.MatchString(n.Value) || strconv.FormatFloat(f, 'f', -1, 64) != n.Value {
				n.Tag = "!!str"
			}
		case "!!bool":
			if n.Value != "true" && n.Value != "false" {
				n.Tag = "!!str"
			}
		}
	}
	for _, c := range n.Content {
		keepNumberText(c)
	}
}

// withoutNulls returns v, at path, without its empty keys (nil: nothing
// left set); an empty key of keepEmpty is "".
func (f configFile) withoutNulls(path string, v any) any {
	if v == nil && f.keepEmpty[path] {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	for key, x := range m {
		if x = f.withoutNulls(path+delim+key, x); x == nil {
			delete(m, key)
		} else {
			m[key] = x
		}
	}
	return m
}

// wholeNumberHook refuses a fraction where a whole number goes
// (max_runs: 2.5), as the environment and the flags do; mapstructure
// would cut it to 2.
// A number's text is read in decimal: mapstructure would read 0x1F and
// 0123 (kept as text by configFile) as 31 and 83.
func wholeNumberHook(from, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return data, nil
	}
	if to == reflect.TypeFor[time.Duration]() {
		return data, nil // durationHook's
	}
	switch v := data.(type) {
	case float64:
		if v != math.Trunc(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("want a whole number, got %v", v)
		}
	case string:
		text := strings.TrimSpace(v)
		if text == "" {
			return data, nil // unset (0), as before
		}
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			return n, nil
		}
		// 5.0, 1e1: whole numbers (ParseFloat takes no 0x or 0o form
		// without an exponent, nor 1_000).
		if f, err := strconv.ParseFloat(text, 64); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f), nil
		}
		return nil, fmt.Errorf("want a whole number, got %s", describeValue(v))
	}
	return data, nil
}

// decimalInt is an int flag read in decimal, as the file and the
// environment are (pflag's own reads 010 as 8 and 0x10 as 16).
type decimalInt int

func (d *decimalInt) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, strconv.IntSize)
	if err != nil {
		return errors.New("want a whole number in decimal")
	}
	*d = decimalInt(n)
	return nil
}

func (d *decimalInt) String() string { return strconv.Itoa(int(*d)) }

// Type is "int", so that pflag's GetInt (and koanf's posflag) read it.
func (d *decimalInt) Type() string { return "int" }

// boolTextHook writes a bool where a string goes as true or false
// (mapstructure would write 1 or 0).
func boolTextHook(from, to reflect.Type, data any) (any, error) {
	if b, ok := data.(bool); ok && to.Kind() == reflect.String {
		return strconv.FormatBool(b), nil
	}
	return data, nil
}

// listHook reads a list written as one string ("ValueError, KeyError"),
// the items trimmed: " KeyError" would never match an error type.
func listHook(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, nil
}

// zeroMeansUnset are the options of a type (or a step) whose 0 means
// "not set here": the default, or type_defaults'. Written out, 0 is a
// mistake, most often Temporal's own meaning (unlimited, no timeout),
// which it does not have here: refused, with what to write instead.
var zeroMeansUnset = map[string]string{
	"maximum_attempts":          "0 is not a count of attempts here: write -1 for unlimited (Temporal's 0), or leave it out for the default",
	"heartbeat_timeout":         "0 is not \"no heartbeat timeout\" here: leave it out for the default (10s, or type_defaults')",
	"start_to_close_timeout":    "0 is not \"no timeout\" here: leave it out for the default (5m, or type_defaults')",
	"schedule_to_close_timeout": "0 means unset here (no bound, or type_defaults'): leave it out",
	"initial_interval":          "0 means unset here (1s, or type_defaults'): leave it out",
	"maximum_interval":          "0 means unset here (1m, or type_defaults'): leave it out",
	"backoff_coefficient":       "0 means unset here (2, or type_defaults'): leave it out",
	"claim_wait":                "0 means unset here (the default, or type_defaults'): leave it out",
	"poll_interval":             "0 means unset here (the default): leave it out",
	"max_poll_interval":         "0 means unset here (the default): leave it out",
}

// checkTypeKeys reports, in a type's (or type_defaults') options as
// written, each option of zeroMeansUnset written as 0, and an exec
// command written as one string. It does not look into params (a task's
// data, whatever its keys).
func checkTypeKeys(path string, data any, errs *[]keyError) {
	switch v := data.(type) {
	case map[string]any:
		for _, key := range sortedKeys(v) {
			at := joinPath(path, key)
			switch x := v[key]; {
			case key == "params":
				continue
			case zeroMeansUnset[key] != "" && writtenZero(x):
				*errs = append(*errs, keyError{at, zeroMeansUnset[key]})
			case key == "command" && strings.HasSuffix(path, "exec"):
				if cmd, ok := x.(string); ok && strings.ContainsAny(cmd, " \t\n") {
					// Not quoted: an argument may be a token.
					*errs = append(*errs, keyError{at, "want a list, the program then each argument ([python3, handler.py]), got one string with spaces"})
				}
			default:
				checkTypeKeys(at, x, errs)
			}
		}
	case []any:
		for i, x := range v {
			checkTypeKeys(fmt.Sprintf("%s[%d]", path, i), x, errs)
		}
	}
}

// writtenZero reports whether v is a zero written as a number or a
// duration (0, 0.0, "0", "0s").
func writtenZero(v any) bool {
	switch x := v.(type) {
	case int:
		return x == 0
	case float64:
		return x == 0
	case string:
		s := strings.TrimSpace(x)
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f == 0
		}
		d, err := time.ParseDuration(s)
		return err == nil && d == 0
	}
	return false
}
