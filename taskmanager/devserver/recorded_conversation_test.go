package devserver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// recordedStep is one call of testdata/php-recorded-conversation.json, a
// conversation recorded from the real PHP TaskManager deployment.
type recordedStep struct {
	Step    string `json:"step"`
	Request struct {
		Method string          `json:"method"`
		Path   string          `json:"path"`
		Body   json.RawMessage `json:"body"`
		APIKey string          `json:"x_api_key"` // none, wrong or set
	} `json:"request"`
	Status int             `json:"status"`
	Answer json.RawMessage `json:"answer"`
}

// TestRecordedPHPConversation replays the recorded conversation, in order,
// against a fresh PHP-style dev server and compares every answer with the
// recorded one: status, and the whole body key for key. Timestamps are
// compared by JSON type and format only.
func TestRecordedPHPConversation(t *testing.T) {
	raw, err := os.ReadFile("testdata/php-recorded-conversation.json")
	if err != nil {
		t.Fatal(err)
	}
	var steps []recordedStep
	if err := json.Unmarshal(raw, &steps); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 42 {
		t.Fatalf("the recording has %d steps, want 42", len(steps))
	}

	const key = "recorded-key"
	srv := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: key})
	base := strings.TrimSuffix(srv.Start(t), "/api")

	failed := 0
	for i, st := range steps {
		name := fmt.Sprintf("step %02d %q (%s %s)", i, st.Step, st.Request.Method, st.Request.Path)
		var body io.Reader
		if len(st.Request.Body) > 0 && string(st.Request.Body) != "null" {
			b, err := expandBody(st.Request.Body)
			if err != nil {
				t.Fatalf("%s: request body: %v", name, err)
			}
			body = bytes.NewReader(b)
		}
		req, err := http.NewRequest(st.Request.Method, base+st.Request.Path, body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		switch st.Request.APIKey {
		case "none":
		case "wrong":
			req.Header.Set("X-API-Key", "wrong-"+key)
		case "set":
			req.Header.Set("X-API-Key", key)
		default:
			t.Fatalf("%s: unknown x_api_key %q", name, st.Request.APIKey)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: read answer: %v", name, err)
		}

		var diffs []string
		if resp.StatusCode != st.Status {
			diffs = append(diffs, fmt.Sprintf("status: got %d, want %d", resp.StatusCode, st.Status))
		}
		gotV, err := decodeNumbers(got)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("answer is not JSON (%v): %.200s", err, got))
		} else {
			wantV, err := decodeNumbers(st.Answer)
			if err != nil {
				t.Fatalf("%s: recorded answer: %v", name, err)
			}
			diffs = append(diffs, compareJSON("", gotV, wantV)...)
		}
		if len(diffs) > 0 {
			failed++
			t.Errorf("%s differs from the PHP deployment:\n\t%s\n\tgot answer:  %s\n\twant answer: %s",
				name, strings.Join(diffs, "\n\t"), clip(compact(got)), clip(compact(st.Answer)))
		}
	}
	if failed > 0 {
		t.Logf("%d of %d steps differ", failed, len(steps))
	}
}

// abbreviated matches the recording's stand-in for a long string,
// e.g. "a…(70,000 bytes)": the prefix repeated to that many bytes.
var abbreviated = regexp.MustCompile(`^(.+)…\(([\d,]+) bytes\)$`)

// expandBody replaces abbreviated strings with real ones of that length.
func expandBody(raw json.RawMessage) ([]byte, error) {
	v, err := decodeNumbers(raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(expand(v))
}

func expand(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = expand(e)
		}
	case []any:
		for i, e := range x {
			x[i] = expand(e)
		}
	case string:
		if m := abbreviated.FindStringSubmatch(x); m != nil {
			n, err := strconv.Atoi(strings.ReplaceAll(m[2], ",", ""))
			if err == nil {
				s := strings.Repeat(m[1], n/len(m[1])+1)
				return s[:n]
			}
		}
	}
	return v
}

func decodeNumbers(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// isTimestamp reports whether a path names a timestamp, whose value changes
// from run to run: the top-level and data timestamps and row *_at fields.
func isTimestamp(path string) bool {
	return path == "timestamp" || path == "data.timestamp" || strings.HasSuffix(path, "_at")
}

var (
	sqlTime  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$`)
	isoTime  = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$`)
	unixTime = regexp.MustCompile(`^\d{10}$`)
)

// timeFormat describes a timestamp's JSON type and format.
func timeFormat(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case json.Number:
		if unixTime.MatchString(x.String()) {
			return "unix seconds (number)"
		}
		return "number " + x.String()
	case string:
		switch {
		case sqlTime.MatchString(x):
			return `"YYYY-MM-DD HH:MM:SS"`
		case isoTime.MatchString(x):
			return `"YYYY-MM-DDTHH:MM:SS+00:00"`
		}
		return fmt.Sprintf("string %q", x)
	}
	return fmt.Sprintf("%T", v)
}

// compareJSON lists every difference between got and want, by path.
func compareJSON(path string, got, want any) []string {
	at := path
	if at == "" {
		at = "(answer)"
	}
	if isTimestamp(path) {
		if g, w := timeFormat(got), timeFormat(want); g != w {
			return []string{fmt.Sprintf("%s: got %s, want %s", at, g, w)}
		}
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: got %s, want an object", at, show(got))}
		}
		var diffs []string
		for _, k := range sortedKeys(w) {
			if _, ok := g[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: missing key (want %s)", join(path, k), show(w[k])))
			}
		}
		for _, k := range sortedKeys(g) {
			if _, ok := w[k]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s: unexpected key (got %s)", join(path, k), show(g[k])))
			}
		}
		for _, k := range sortedKeys(w) {
			if gv, ok := g[k]; ok {
				diffs = append(diffs, compareJSON(join(path, k), gv, w[k])...)
			}
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok {
			return []string{fmt.Sprintf("%s: got %s, want a list", at, show(got))}
		}
		if len(g) != len(w) {
			return []string{fmt.Sprintf("%s: got %d elements %s, want %d %s", at, len(g), show(g), len(w), show(w))}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, compareJSON(fmt.Sprintf("%s[%d]", path, i), g[i], w[i])...)
		}
		return diffs
	default:
		if show(got) != show(want) {
			return []string{fmt.Sprintf("%s: got %s, want %s", at, show(got), show(want))}
		}
		return nil
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// show renders a value as JSON, keeping the type visible ("1" vs 1).
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return clip(b)
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + fmt.Sprintf("…(%d bytes)", len(b))
	}
	return string(b)
}
