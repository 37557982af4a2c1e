package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prismq/tmbridge/taskmanager"
	"golang.org/x/text/cases"
	"golang.org/x/text/language"
)

// Task types of the built-in example handlers. They behave like the
// reference Python worker's handlers: same params, same result fields.
const (
	TypeEcho      = "example.echo"
	TypeUppercase = "example.uppercase"
	TypeMathAdd   = "example.math.add"
	TypeSleep     = "example.sleep"
	TypeError     = "example.error"
)

// MaxSleep caps example.sleep, as the reference worker does.
const MaxSleep = 30 * time.Second

// EchoParams are example.echo's params.
type EchoParams struct {
	Message string `json:"message"`
}

// EchoResult is example.echo's result.
type EchoResult struct {
	Echo   string `json:"echo"`
	Length int    `json:"length"` // in characters, as Python's len
}

// UppercaseParams are example.uppercase's params.
type UppercaseParams struct {
	Text string `json:"text"`
}

// UppercaseResult is example.uppercase's result.
type UppercaseResult struct {
	Original  string `json:"original"`
	Uppercase string `json:"uppercase"`
}

// AddParams are example.math.add's params: numbers or numeric strings
// (Python's float() accepts both); missing means 0.
type AddParams struct {
	A json.RawMessage `json:"a"`
	B json.RawMessage `json:"b"`
}

// AddResult is example.math.add's result.
type AddResult struct {
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	Result float64 `json:"result"`
}

// SleepParams are example.sleep's params: seconds, default 2, at most 30.
type SleepParams struct {
	Duration *float64 `json:"duration"`
}

// SleepResult is example.sleep's result.
type SleepResult struct {
	Duration float64 `json:"duration"`
}

// ErrorParams are example.error's params.
type ErrorParams struct {
	Message string `json:"message"`
}

// RegisterExamples registers the five example handlers.
func RegisterExamples(r *Registry) {
	Register(r, TypeEcho, Echo)
	Register(r, TypeUppercase, Uppercase)
	Register(r, TypeMathAdd, MathAdd)
	Register(r, TypeSleep, Sleep)
	Register(r, TypeError, Fail)
}

// Echo returns the message and its length.
func Echo(_ context.Context, p EchoParams) (EchoResult, error) {
	return EchoResult{Echo: p.Message, Length: utf8.RuneCountInString(p.Message)}, nil
}

// Uppercase returns the text and its upper-case form, with Unicode's full
// case mapping as Python's str.upper() (straße → STRASSE).
func Uppercase(_ context.Context, p UppercaseParams) (UppercaseResult, error) {
	return UppercaseResult{Original: p.Text, Uppercase: cases.Upper(language.Und).String(p.Text)}, nil
}

// MathAdd adds a and b; a value that is not a number fails the task for good.
func MathAdd(_ context.Context, p AddParams) (AddResult, error) {
	a, err := toFloat("a", p.A)
	if err != nil {
		return AddResult{}, err
	}
	b, err := toFloat("b", p.B)
	if err != nil {
		return AddResult{}, err
	}
	if math.IsInf(a+b, 0) {
		return AddResult{}, InvalidParams(fmt.Errorf("a + b overflows a float64 (%g + %g)", a, b))
	}
	return AddResult{A: a, B: b, Result: a + b}, nil
}

// toFloat reads a number as the reference worker's float(params.get(field,
// 0)) does: absent is 0, a boolean 1 or 0, a numeric string its number;
// null, and anything else, fails.
func toFloat(field string, raw json.RawMessage) (float64, error) {
	if len(raw) == 0 {
		return 0, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, InvalidParams(fmt.Errorf("field %q: %w", field, err))
	}
	switch x := v.(type) {
	case float64:
		return x, nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case nil:
		return 0, InvalidParams(fmt.Errorf("field %q: want a number, got null", field))
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, InvalidParams(fmt.Errorf("field %q: could not convert string to float: %q", field, taskmanager.Clip(x, 64, "…")))
		}
		return f, nil
	default:
		return 0, InvalidParams(fmt.Errorf("field %q: want a number, got %s", field, taskmanager.Clip(string(raw), 64, "…")))
	}
}

// Sleep sleeps for duration seconds (at most 30), reporting progress in up
// to 10 steps. It stops early, with the context's error, when cancelled.
func Sleep(ctx context.Context, p SleepParams) (SleepResult, error) {
	secs := 2.0
	if p.Duration != nil {
		secs = *p.Duration
	}
	secs = min(max(secs, 0), MaxSleep.Seconds())
	steps := int(min(math.Ceil(secs), 10))
	if steps < 1 {
		return SleepResult{Duration: secs}, nil
	}
	step := time.Duration(secs / float64(steps) * float64(time.Second))
	t := time.NewTimer(step)
	defer t.Stop()
	for i := 1; i <= steps; i++ {
		select {
		case <-ctx.Done():
			return SleepResult{}, ctx.Err()
		case <-t.C:
		}
		ReportProgress(ctx, i*100/steps, fmt.Sprintf("step %d/%d", i, steps))
		t.Reset(step)
	}
	return SleepResult{Duration: secs}, nil
}

// Fail always fails, with no Temporal retry, with the message (default
// "Simulated error"); TaskManager queues the task again while it has
// attempts left.
func Fail(_ context.Context, p ErrorParams) (struct{}, error) {
	if p.Message == "" {
		p.Message = "Simulated error"
	}
	return struct{}{}, Permanent(errors.New(p.Message))
}
