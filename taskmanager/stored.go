package taskmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxStoredBytes is how many bytes the PHP deployment's MySQL TEXT columns
// hold: result_json (a task's result) and error_message. A completion whose
// stored value is longer is answered with a 500 "SQLSTATE[22001]: … Data too
// long for column 'result_json'" (or 'error_message'), which the Client
// reports as ErrPayloadTooLarge, and the task stays claimed. Measure a value
// with StoredResultSize or StoredTextSize before sending it.
const MaxStoredBytes = 65535

// StoredTextSize returns how many bytes the PHP deployment stores for s in
// a TEXT column such as error_message: its UTF-8 length, where each byte
// that is not part of valid UTF-8 counts as U+FFFD (3 bytes), as it is sent
// (encoding/json replaces each such byte with U+FFFD). It does not allocate.
func StoredTextSize(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			n++
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			n += 3
		} else {
			n += size
		}
		i += size
	}
	return n
}

// Clip returns s, or, when it is longer than n bytes, its start up to n
// bytes (cut on a rune boundary) followed by mark: an error quotes a long
// text by its start.
func Clip(s string, n int, mark string) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// ValidUTF8 returns s with each byte that is not part of valid UTF-8 as
// U+FFFD, as encoding/json sends it and StoredTextSize counts it.
func ValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// StoredResultSize returns how many bytes the PHP deployment stores for a
// task result in its result_json column: the length of PHP's re-encoding,
// json_encode(json_decode(result, true), JSON_UNESCAPED_UNICODE |
// JSON_UNESCAPED_SLASHES). That is compact JSON where
//
//   - strings and keys are written with unicode and slashes unescaped,
//     escaping only `"`, `\`, control characters (\b \f \n \r \t, else
//     \u00XX) and U+2028/U+2029 (\u2028, \u2029);
//   - each byte that is not valid UTF-8, and each unpaired UTF-16
//     surrogate escape, becomes U+FFFD (3 bytes);
//   - numbers are written as PHP writes them (phpNumberSize): integers
//     within int64 as written, other numbers as doubles (1.0 is 1);
//   - an empty object is written [] (same size), and an object whose keys
//     are "0", "1", … in order is written as a list (PHP arrays);
//   - duplicate keys are counted as written.
//
// A result that is absent, null, {} or [] is stored as NULL: 0 bytes. For
// input that is not valid JSON it returns len(result). It is deterministic
// and does not allocate for results whose keys hold no escapes and whose
// numbers are at most 32 characters long.
func StoredResultSize(result json.RawMessage) int {
	p := phpSizer{b: result}
	p.ws()
	if p.i == len(p.b) {
		return 0
	}
	first := p.b[p.i]
	n, ok := p.value(0)
	if p.ws(); !ok || p.i != len(p.b) {
		return len(result)
	}
	if first == 'n' || (n == 2 && (first == '{' || first == '[')) {
		return 0 // null, {} or []: stored as NULL
	}
	return n
}

// maxDepth bounds nesting as encoding/json does.
const maxDepth = 10000

// phpSizer measures PHP's re-encoding of JSON without building it.
type phpSizer struct {
	b []byte
	i int
}

func (p *phpSizer) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *phpSizer) literal(word string) bool {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		return false
	}
	p.i += len(word)
	return true
}

// value measures the value at p.i (after white space).
func (p *phpSizer) value(depth int) (int, bool) {
	if depth > maxDepth || p.i >= len(p.b) {
		return 0, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		n, _, ok := p.str()
		return n, ok
	case c == 't':
		return 4, p.literal("true")
	case c == 'f':
		return 5, p.literal("false")
	case c == 'n':
		return 4, p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return 0, false
}

func (p *phpSizer) array(depth int) (int, bool) {
	p.i++ // [
	n, count := 2, 0
	for {
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ']' && count == 0 {
			p.i++
			return n, true
		}
		v, ok := p.value(depth)
		if !ok {
			return 0, false
		}
		n += v
		count++
		p.ws()
		if p.i >= len(p.b) {
			return 0, false
		}
		switch p.b[p.i] {
		case ',':
			n++
			p.i++
		case ']':
			p.i++
			return n, true
		default:
			return 0, false
		}
	}
}

// object measures an object both as written ({"k":v,…}) and as the list
// PHP writes when its keys are "0", "1", … in order ([v,…]).
func (p *phpSizer) object(depth int) (int, bool) {
	p.i++ // {
	keyed, values, count := 2, 2, 0
	isList := true
	for {
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == '}' && count == 0 {
			p.i++
			return 2, true // [] in PHP, {} as sent: the same size
		}
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return 0, false
		}
		start := p.i
		k, escaped, ok := p.str()
		if !ok {
			return 0, false
		}
		if isList {
			isList = isIndexKey(p.b[start+1:p.i-1], escaped, count)
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return 0, false
		}
		p.i++
		p.ws()
		v, ok := p.value(depth)
		if !ok {
			return 0, false
		}
		keyed += k + 1 + v
		values += v
		count++
		p.ws()
		if p.i >= len(p.b) {
			return 0, false
		}
		switch p.b[p.i] {
		case ',':
			keyed++
			values++
			p.i++
		case '}':
			p.i++
			if isList {
				return values, true
			}
			return keyed, true
		default:
			return 0, false
		}
	}
}

// isIndexKey reports whether a raw key (without quotes) is the decimal
// index idx, which PHP turns into an integer array key.
func isIndexKey(raw []byte, escaped bool, idx int) bool {
	if escaped {
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s) != nil {
			return false
		}
		raw = []byte(s)
	}
	var buf [20]byte
	return string(raw) == string(strconv.AppendInt(buf[:0], int64(idx), 10))
}

// str measures the string at p.i as PHP writes it and reports whether it
// held escapes.
func (p *phpSizer) str() (n int, escaped, ok bool) {
	p.i++ // "
	n = 2
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return n, escaped, true
		case c == '\\':
			escaped = true
			if p.i+1 >= len(p.b) {
				return 0, escaped, false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				n += 2
			case '/':
				n++
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return 0, escaped, false
				}
				if r >= 0xD800 && r < 0xDC00 { // high surrogate: a pair?
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						save := p.i
						p.i += 2
						if lo, ok := p.hex4(); ok && lo >= 0xDC00 && lo < 0xE000 {
							n += 4
							continue
						}
						p.i = save
					}
					n += 3 // unpaired: U+FFFD
					continue
				}
				if r >= 0xDC00 && r < 0xE000 {
					n += 3
					continue
				}
				n += runeSize(r)
			default:
				return 0, escaped, false
			}
		case c < 0x20:
			return 0, escaped, false // not valid JSON
		case c < utf8.RuneSelf:
			n++
			p.i++
		default:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				n += 3
			} else {
				n += runeSize(r)
			}
			p.i += size
		}
	}
	return 0, escaped, false
}

// runeSize is the size of one character in PHP's output.
func runeSize(r rune) int {
	switch {
	case r == '"' || r == '\\' || r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20 || r == 0x2028 || r == 0x2029:
		return 6 // \u00XX, \u2028, \u2029
	}
	return utf8.RuneLen(r)
}

func (p *phpSizer) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// number checks a JSON number and counts it as written.
func (p *phpSizer) number() (int, bool) {
	start := p.i
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		s := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		return p.i - s
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return 0, false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return 0, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	return phpNumberSize(p.b[start:p.i]), true
}

// phpNumberSize is the length of PHP's json_encode(json_decode(n)) for a
// valid JSON number n: an integer within int64 as a decimal ("-0" is
// "0"); any other number a double, written as PHP writes one with its
// default serialize_precision (-1): the shortest digits that read back
// as it, in plain notation ("10", "0.0001", "1.5") from 1e-4 up to (not
// including) 1e17, else as "1.0e+25", "1.5e-7". A double out of range
// (1e400) is counted as written.
func phpNumberSize(n []byte) int {
	if !bytes.ContainsAny(n, ".eE") && fitsInt64(n) {
		if string(n) == "-0" {
			return 1
		}
		return len(n) // JSON has no leading zeros
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return len(n)
	}
	// "-d.ddde±x": the shortest digits, and the decimal point's place.
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	sign := 0
	if e[0] == '-' {
		sign, e = 1, e[1:]
	}
	at := bytes.IndexByte(e, 'e')
	digits := at
	if digits > 1 {
		digits-- // the point
	}
	x := 0
	for _, c := range e[at+2:] {
		x = 10*x + int(c-'0')
	}
	if e[at+1] == '-' {
		x = -x
	}
	decpt := x + 1 // value = 0.digits × 10^decpt
	switch {
	case decpt < -3 || decpt > 17: // d.ddd (d.0 for one digit), e, sign, exponent
		return sign + 2 + max(digits-1, 1) + 2 + len(strconv.Itoa(max(decpt-1, 1-decpt)))
	case decpt <= 0: // 0.000ddd
		return sign + 2 - decpt + digits
	case digits > decpt: // ddd.ddd
		return sign + digits + 1
	default: // ddd000
		return sign + decpt
	}
}

// fitsInt64 reports whether the JSON integer n is within int64, as PHP's
// json_decode decides between an int and a double.
func fitsInt64(n []byte) bool {
	digits, limit := n, "9223372036854775807"
	if len(n) > 0 && n[0] == '-' {
		digits, limit = n[1:], "9223372036854775808"
	}
	return len(digits) < len(limit) || (len(digits) == len(limit) && string(digits) <= limit)
}

// OrEmptyObject returns raw, or {} when raw is empty or blank: TaskManager
// stores an empty result, and takes empty params, as an empty object.
func OrEmptyObject(raw json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}

// AsObject returns raw as TaskManager stores a result: a JSON object.
// Empty or null becomes {}, any other value {"value": raw}; raw that is not
// JSON is an error.
func AsObject(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if string(raw) == "null" {
		raw = nil
	}
	raw = OrEmptyObject(raw)
	if !json.Valid(raw) {
		return nil, errors.New("not JSON")
	}
	if raw[0] == '{' {
		return raw, nil
	}
	return json.Marshal(map[string]json.RawMessage{"value": raw})
}
