package taskmanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStoredTextSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0},
		{"boom", 4},
		{"héllo", 6},
		{"€", 3},
		{"😀", 4},
		{"a/b\"c\\d\n", 8},  // stored as bytes, nothing escaped
		{"\xff", 3},         // invalid byte → U+FFFD
		{"a\xe2\x82", 7},    // truncated sequence: each byte → U+FFFD
		{"\xed\xa0\x80", 9}, // an encoded surrogate is invalid UTF-8
		{"\uFFFD", 3},       // a real U+FFFD stays 3 bytes
		{strings.Repeat("e", 70_000), 70_000},
	} {
		require.Equal(t, tc.want, StoredTextSize(tc.in), "%q", tc.in)
	}
}

func TestStoredResultSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		// stored as NULL
		{``, 0},
		{`null`, 0},
		{` {  } `, 0},
		{`[]`, 0},
		// compact
		{`{"echo":"hi"}`, len(`{"echo":"hi"}`)},
		{"{ \"a\" :\t1 ,\n \"b\" : [ true , false , null ] }", len(`{"a":1,"b":[true,false,null]}`)},
		// unicode unescaped
		{`{"a":"é"}`, len(`{"a":"é"}`)},
		{`{"a":"\u00e9"}`, len(`{"a":"é"}`)},
		{`{"é":"\u20AC"}`, len(`{"é":"€"}`)},
		{`{"a":"\ud83d\ude00"}`, len(`{"a":"😀"}`)},
		// slashes unescaped
		{`{"u":"http:\/\/x.org\/y"}`, len(`{"u":"http://x.org/y"}`)},
		{`{"u":"http://x.org/y"}`, len(`{"u":"http://x.org/y"}`)},
		{`{"u":"\u002f"}`, len(`{"u":"/"}`)},
		// what stays escaped
		{`{"s":"\"\\\b\f\n\r\t"}`, len(`{"s":"\"\\\b\f\n\r\t"}`)},
		{`{"s":"\u0001\u001F"}`, len(`{"s":"\u0001\u001f"}`)},
		{`{"s":"\u2028\u2029"}`, len(`{"s":"\u2028\u2029"}`)},
		{"{\"s\":\"\u2028\"}", len(`{"s":"\u2028"}`)},
		{`{"s":"<&>"}`, len(`{"s":"<&>"}`)},
		// invalid UTF-8 and unpaired surrogates become U+FFFD
		{"{\"s\":\"\xff\xfe\"}", len(`{"s":"`) + 6 + len(`"}`)},
		{"{\"s\":\"a\xe2\x82\"}", len(`{"s":"a`) + 6 + len(`"}`)},
		{`{"s":"\ud800x"}`, len(`{"s":"`) + 3 + len(`x"}`)},
		{`{"s":"\udc00"}`, len(`{"s":"`) + 3 + len(`"}`)},
		// numbers as PHP writes them (TestPHPNumberSize)
		{`{"n":1.50,"m":1E3,"k":-0,"big":123456789012345678901234567890}`, len(`{"n":1.5,"m":1000,"k":0,"big":1.2345678901234568e+29}`)},
		// nested, with empty objects written as [] (same size)
		{`{"a":{"b":{"c":[1,{},[],{"d":null}]}}}`, len(`{"a":{"b":{"c":[1,[],[],{"d":null}]}}}`)},
		// PHP arrays: keys "0", "1", … in order make a list
		{`{"0":"a","1":"b"}`, len(`["a","b"]`)},
		{`{"x":{"0":"a","1":"b"}}`, len(`{"x":["a","b"]}`)},
		{`{"\u0030":"a"}`, len(`["a"]`)},
		{`{"1":"a","0":"b"}`, len(`{"1":"a","0":"b"}`)},
		{`{"0":"a","2":"b"}`, len(`{"0":"a","2":"b"}`)},
		{`{"00":"a"}`, len(`{"00":"a"}`)},
		// a non-empty top-level list is stored
		{`[1]`, 3},
		// not JSON: len(result)
		{`{"a":`, 5},
		{`{"a":1}x`, 8},
		{`{"a":01}`, 8},
		{"{\"a\":\"\x01\"}", 9},
		{`{"a":"\x"}`, 10},
		{`{"a":tru}`, 9},
	} {
		require.Equal(t, tc.want, StoredResultSize(json.RawMessage(tc.in)), "%s", tc.in)
	}
}

// PHP decodes an integer within int64 as an int, any other number as a
// double, and writes a double with the shortest digits that read back as
// it (serialize_precision -1), plain while its decimal exponent is in
// -3..17 (php_gcvt), else as d.ddde±x with at least one decimal.
func TestPHPNumberSize(t *testing.T) {
	for in, php := range map[string]string{
		"0": "0", "-0": "0", "7": "7", "-12": "-12", "1.0": "1", "-0.0": "-0", "0.0": "0",
		"1.50": "1.5", "1E3": "1000", "1e+3": "1000", "123.456e-2": "1.23456", "0.1": "0.1",
		"0.0001": "0.0001", "0.00001": "1.0e-5", "-1.5e-7": "-1.5e-7", "0.05": "0.05",
		"1e16": "10000000000000000", "1e17": "1.0e+17", "1.5e17": "1.5e+17", "12345678901234567": "12345678901234567",
		"9223372036854775807": "9223372036854775807", "-9223372036854775808": "-9223372036854775808",
		"9223372036854775808":            "9.223372036854776e+18",
		"123456789012345678901234567890": "1.2345678901234568e+29",
		"0.30000000000000004":            "0.30000000000000004", "1e-300": "1.0e-300", "1e400": "1e400",
	} {
		require.Equal(t, len(php), phpNumberSize([]byte(in)), "%s (PHP: %s)", in, php)
	}
}

func TestStoredResultSize_big(t *testing.T) {
	raw, _ := json.Marshal(map[string]string{"text": strings.Repeat("a", 70_000)})
	require.Equal(t, 70_000+len(`{"text":""}`), StoredResultSize(raw))
	require.Greater(t, StoredResultSize(raw), MaxStoredBytes)
	raw, _ = json.Marshal(map[string]string{"p": strings.Repeat("a/é", 10_000)})
	require.Equal(t, 40_000+len(`{"p":""}`), StoredResultSize(raw), "Go escapes nothing here; PHP unescapes slashes")
}

func TestStored_allocations(t *testing.T) {
	raw := json.RawMessage(`{"a":[1,2.5,{"b":"c\/d\u00e9\n"}],"0":null,"s":"` + strings.Repeat("x", 1000) + `"}`)
	text := strings.Repeat("é\xff", 1000)
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = StoredResultSize(raw) }))
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = StoredTextSize(text) }))
}

// FuzzStoredResultSize checks the size against Go's own compact
// re-encoding, which matches PHP's in size (unescaped unicode, slashes and
// HTML, U+FFFD for invalid bytes; numbers as phpNumbers writes them) except for PHP's lists
// ({"0":…}) and duplicate keys, which are skipped.
func FuzzStoredResultSize(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":[1,{"b":"\u00e9\/"}]}`, "{\"s\":\"\xff\"}", `{"x":1e5}`, `{}`, `{"0":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got := StoredResultSize(raw) // must not panic on anything
		if !json.Valid(raw) || hasListOrDuplicateKeys(raw) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return
		}
		switch x := v.(type) {
		case nil:
			require.Zero(t, got)
			return
		case map[string]any:
			if len(x) == 0 {
				require.Zero(t, got)
				return
			}
		case []any:
			if len(x) == 0 {
				require.Zero(t, got)
				return
			}
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		require.NoError(t, enc.Encode(phpNumbers(v)))
		require.Equal(t, buf.Len()-1, got, "%q re-encoded as %q", raw, buf.Bytes())
	})
}

// phpNumbers rewrites the json.Numbers in v as PHP writes them (see
// TestPHPNumberSize), building the text itself.
func phpNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = phpNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = phpNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil && !strings.ContainsAny(string(x), ".eE") {
			return json.Number(strconv.FormatInt(i, 10))
		}
		f, err := x.Float64()
		if err != nil {
			return x
		}
		sign := ""
		if math.Signbit(f) {
			sign, f = "-", -f
		}
		m, e, _ := strings.Cut(strconv.FormatFloat(f, 'e', -1, 64), "e")
		digits := strings.Replace(m, ".", "", 1)
		exp, _ := strconv.Atoi(e)
		switch {
		case exp < -4 || exp > 16:
			frac := digits[1:]
			if frac == "" {
				frac = "0"
			}
			es := fmt.Sprintf("%+d", exp)
			return json.Number(sign + digits[:1] + "." + frac + "e" + es)
		case exp < 0:
			return json.Number(sign + "0." + strings.Repeat("0", -exp-1) + digits)
		case len(digits) > exp+1:
			return json.Number(sign + digits[:exp+1] + "." + digits[exp+1:])
		default:
			return json.Number(sign + digits + strings.Repeat("0", exp+1-len(digits)))
		}
	}
	return v
}

// hasListOrDuplicateKeys reports whether any object in raw has a key "0"
// (it may be a PHP list) or the same key twice.
func hasListOrDuplicateKeys(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		object bool
		keys   map[string]bool
		isKey  bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '{', '[':
				if top != nil && top.object {
					top.isKey = true
				}
				stack = append(stack, &frame{object: x == '{', keys: map[string]bool{}, isKey: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.object && top.isKey {
				if x == "0" || top.keys[x] {
					return true
				}
				top.keys[x] = true
				top.isKey = false
				continue
			}
		}
		if top != nil && top.object {
			top.isKey = true
		}
	}
}
