// Package taskmanager is the HTTP client of the PrismQ TaskManager API.
//
// It works unchanged against the API as documented and against the PHP
// deployment as it really answers (see docs/taskmanager-contract.md): both
// answer styles decode to the same Go values, and every failure is an *Error
// that matches one sentinel (ErrNoTask, ErrNotClaimed, ErrClaimedByOther, …)
// so that callers decide "retry or not" in one place:
//
//	c, err := taskmanager.New(taskmanager.Options{BaseURL: "http://localhost:8000/api", APIKey: key})
//	task, err := c.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "3"})
//	if errors.Is(err, taskmanager.ErrNoTask) { /* wait and poll again */ }
package taskmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Options configure a Client.
type Options struct {
	// BaseURL is the API root, e.g. http://localhost:8000/api. Paths are
	// joined to it, so its /api is kept. Required.
	BaseURL string
	// APIKey is sent as X-API-Key on every call but Health. It never
	// appears in errors or logs.
	APIKey string
	// Timeout bounds each call. Default 30s.
	Timeout time.Duration
	// HTTPClient overrides the HTTP client (its Timeout is left alone; the
	// Client uses a copy whose CheckRedirect follows no redirect). Default:
	// a client with a pooled transport that reuses connections.
	HTTPClient *http.Client
	// UserAgent is sent on every call. Default "tmbridge".
	UserAgent string
	// Observe, when set, is told of every call once it is answered or
	// failed: its endpoint (claim, complete, progress, get_task, …), the
	// HTTP status (0: no answer) and how long it took. The bridge's
	// metrics use it.
	Observe func(endpoint string, status int, took time.Duration)
}

// Client talks to one TaskManager. It is safe for concurrent use.
type Client struct {
	base    string // scheme://host/path without trailing slash, escaped
	apiKey  string
	timeout time.Duration
	http    *http.Client
	ua      string
	observe func(endpoint string, status int, took time.Duration)
}

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 16 << 20

// New returns a Client, or an error when BaseURL is not an http(s) URL.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(opts.BaseURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("taskmanager: base URL %q: want http(s)://host[:port]/path", RedactURL(opts.BaseURL))
	}
	u.RawQuery, u.Fragment = "", ""
	c := &Client{
		base:    strings.TrimRight(u.String(), "/"),
		apiKey:  opts.APIKey,
		timeout: opts.Timeout,
		http:    opts.HTTPClient,
		ua:      opts.UserAgent,
		observe: opts.Observe,
	}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.ua == "" {
		c.ua = "tmbridge"
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 256
		tr.MaxIdleConnsPerHost = 128
		c.http = &http.Client{Transport: tr}
	} else {
		hc := *c.http
		c.http = &hc
	}
	// A redirect would take X-API-Key (and the outcome) wherever it points:
	// the 3xx comes back as it is and fails the call (see redirected).
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// BaseURL returns the API root as RedactURL shows it (no userinfo).
func (c *Client) BaseURL() string { return RedactURL(c.base) }

// Health checks GET /health (no API key needed).
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, call{op: "health", endpoint: "health", method: http.MethodGet, path: "/health", noAuth: true}, &h)
	if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrNotFound) {
		// /health takes no key: such an answer comes from elsewhere.
		err = fmt.Errorf("%w (TaskManager's /health needs no API key: is %s the API's base URL? It usually ends in /api)", err, c.BaseURL())
	}
	return h, err
}

// RegisterTaskType registers a task type or updates an existing one.
func (c *Client) RegisterTaskType(ctx context.Context, spec TaskTypeSpec) (Registered, error) {
	var r Registered
	err := c.call(ctx, call{op: "register task type " + spec.Name, endpoint: "register_task_type", method: http.MethodPost, path: "/task-types/register", body: spec}, &r)
	return r, err
}

// GetTaskType returns a task type by name; ErrNotFound when unknown. It works
// where ListTaskTypes does not (the PHP deployment).
func (c *Client) GetTaskType(ctx context.Context, name string) (TaskType, error) {
	var t TaskType
	err := c.call(ctx, call{op: "get task type " + name, endpoint: "get_task_type", method: http.MethodGet, path: "/task-types/" + url.PathEscape(name), one: true}, &t)
	return t, err
}

// ListTaskTypes lists task types. The PHP deployment answers this with a
// 500; the error then says to resolve types by name (ResolveTaskTypes).
func (c *Client) ListTaskTypes(ctx context.Context, activeOnly bool) ([]TaskType, error) {
	q := url.Values{}
	if activeOnly {
		q.Set("active_only", "true")
	}
	var ts []TaskType
	err := c.call(ctx, call{op: "list task types", endpoint: "list_task_types", method: http.MethodGet, path: "/task-types", query: q, listKeys: []string{"task_types", "items"}}, &ts)
	var e *Error
	if errors.As(err, &e) && e.Kind == ErrTransient && e.Status == http.StatusInternalServerError {
		e.Message += " (listing task types is broken on this deployment: resolve types one by one by name)"
	}
	return ts, err
}

// ResolveTaskTypes looks task types up one by one by name (GET
// /task-types/{name}), which works where listing is broken. It returns them
// in the order of names, or the first error (ErrNotFound names the type).
func (c *Client) ResolveTaskTypes(ctx context.Context, names []string) ([]TaskType, error) {
	out := make([]TaskType, 0, len(names))
	for _, n := range names {
		t, err := c.GetTaskType(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// CreateTask creates a task of the named type. An identical type+params
// returns the existing task with Deduplicated set.
func (c *Client) CreateTask(ctx context.Context, typeName string, params any) (Created, error) {
	raw, err := json.Marshal(params)
	if err != nil {
		return Created{}, &Error{Op: "create task of type " + typeName, Kind: ErrValidation, Err: fmt.Errorf("params do not encode as JSON: %w", err)}
	}
	body := struct {
		Type   string          `json:"type"`
		Params json.RawMessage `json:"params"`
	}{typeName, raw}
	var r struct {
		Created
		Dedup1 Flag `json:"deduplicated"`
		Dedup2 Flag `json:"duplicate"`
	}
	err = c.call(ctx, call{op: "create task " + typeName, endpoint: "create_task", method: http.MethodPost, path: "/tasks", body: body}, &r)
	r.Created.Deduplicated = bool(r.Dedup1 || r.Dedup2)
	return r.Created, err
}

// ListTasks lists tasks, newest first as the server orders them.
func (c *Client) ListTasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", f.Status)
	}
	if f.Type != "" {
		q.Set("type", f.Type)
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", strconv.Itoa(f.Offset))
	}
	var ts taskRows
	err := c.call(ctx, call{op: "list tasks", endpoint: "list_tasks", method: http.MethodGet, path: "/tasks", query: q, listKeys: []string{"tasks", "items"}}, &ts)
	return ts, err
}

// GetTask returns one task; ErrNotFound when unknown.
func (c *Client) GetTask(ctx context.Context, id ID) (Task, error) {
	var t Task
	err := c.call(ctx, call{op: "get task " + string(id), endpoint: "get_task", method: http.MethodGet, path: "/tasks/" + url.PathEscape(string(id)), one: true}, &t)
	return t, err
}

// Claim claims the next task of one type. ErrNoTask when there is none.
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (Task, error) {
	var t Task
	err := c.call(ctx, call{op: "claim task of type " + string(req.TaskTypeID), endpoint: "claim", method: http.MethodPost, path: "/tasks/claim", body: req, claim: true, one: true}, &t)
	if err == nil && t.ID == "" {
		err = &Error{Op: "claim task of type " + string(req.TaskTypeID), Status: 200, Kind: ErrTransient, Err: errors.New("answer has no task id")}
	}
	return t, err
}

// Progress reports a claimed task's progress (0–100) and an optional message.
func (c *Client) Progress(ctx context.Context, id ID, workerID string, progress int, message string) error {
	body := struct {
		WorkerID string `json:"worker_id"`
		Progress int    `json:"progress"`
		Message  string `json:"message,omitempty"`
	}{workerID, progress, message}
	return c.call(ctx, call{op: "progress of task " + string(id), endpoint: "progress", method: http.MethodPost, path: "/tasks/" + url.PathEscape(string(id)) + "/progress", body: body}, nil)
}

// Complete reports a claimed task's outcome. It returns the task's new
// status: "completed", "failed" or "pending (retry)".
func (c *Client) Complete(ctx context.Context, id ID, comp Completion) (string, error) {
	var r struct {
		Status string `json:"status"`
	}
	err := c.call(ctx, call{op: "complete task " + string(id), endpoint: "complete", method: http.MethodPost, path: "/tasks/" + url.PathEscape(string(id)) + "/complete", body: comp, noData: true}, &r)
	return r.Status, err
}

type call struct {
	op       string
	endpoint string // the op without ids, for metrics
	method   string
	path     string // escaped, relative to the base
	query    url.Values
	body     any
	noAuth   bool
	claim    bool     // 404 and PHP's 500 mean ErrNoTask
	one      bool     // data may be {items:[row]}: take the row, [] is ErrNotFound
	listKeys []string // data is a list under one of these keys (or bare)
	noData   bool     // a success without data is a success (the OpenAPI file's completeTask answer)
}

func (c *Client) call(ctx context.Context, cl call, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fail := func(status int, kind, err error) error {
		// The key never goes into an error, whatever an answer echoes.
		err = ScrubError(err, func(s string) string { return redactKey(s, c.apiKey) })
		return &Error{Op: cl.op, Status: status, Kind: kind, Err: err}
	}

	var body io.Reader
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return fail(0, ErrValidation, fmt.Errorf("encode request: %w", err))
		}
		body = bytes.NewReader(b)
	}
	target := c.base + cl.path
	if len(cl.query) > 0 {
		target += "?" + cl.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, target, body)
	if err != nil {
		return fail(0, ErrValidation, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !cl.noAuth && c.apiKey != "" {
		req.Header.Set("X-API-Key", c.apiKey)
	}

	began := time.Now()
	resp, err := c.http.Do(req)
	if c.observe != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		defer func() { c.observe(cl.endpoint, status, time.Since(began)) }()
	}
	if err != nil {
		return fail(0, ErrTransient, netError(RedactURLError(err)))
	}
	// Read to its end, the connection is reused; past the bound, the rest
	// is not read (it may never end).
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	resp.Body.Close()
	if err != nil {
		return fail(resp.StatusCode, ErrTransient, fmt.Errorf("read answer: %w", netError(err)))
	}
	if len(raw) > maxAnswer {
		return fail(resp.StatusCode, ErrTransient, fmt.Errorf("answer over %d MiB, not read", maxAnswer>>20))
	}

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return &Error{Op: cl.op, Status: resp.StatusCode, Kind: ErrTransient, Message: redactKey(redirected(resp), c.apiKey)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(cl, resp, resp.StatusCode, raw, c.apiKey)
	}
	env, err := decodeEnvelope(raw)
	if errors.Is(err, errNotObject) {
		// Not TaskManager's (a proxy's page, a captive portal): say what
		// it is, never what it says.
		err = errors.New(describeForeign(resp.Header.Get("Content-Type"), raw, c.apiKey))
	}
	if err != nil {
		return fail(resp.StatusCode, ErrTransient, err)
	}
	if env.Success != nil && !*env.Success {
		// an error answer with a 2xx status: read as a 400
		return answerError(cl, resp, 400, raw, c.apiKey)
	}
	// A success without data only when the answer says success: a proxy's
	// {} or {"error": …} is not TaskManager's.
	saysSuccess := env.Success != nil && *env.Success
	if data := bytes.TrimSpace(env.Data); out == nil || (cl.noData && saysSuccess && (len(data) == 0 || string(data) == "null")) {
		return nil
	}
	if err := decodeData(env.Data, cl, out); err != nil {
		if errors.Is(err, ErrNotFound) {
			return fail(resp.StatusCode, ErrNotFound, nil)
		}
		return fail(resp.StatusCode, ErrTransient, err)
	}
	return nil
}

// answerError builds the *Error for an error answer, JSON or not: a non-2xx
// one, or a 2xx one that says "success": false (read as a 400: readAs is
// the status it is classified by).
//
// Only TaskManager's own answers may end a call for good: an answer that is
// not TaskManager's error JSON (a proxy's HTML page, an empty body, JSON of
// another shape) is ErrTransient where its status would mean ErrValidation,
// ErrNotFound, ErrClaimedByOther, ErrNotClaimed or ErrNoTask. 401, 413 and
// 429 keep their meaning whatever the body.
//
// A foreign answer's message says what came back (content type, size, and
// a JSON message unless it holds apiKey), never the body itself; no
// message or detail carries apiKey.
func answerError(cl call, resp *http.Response, readAs int, raw []byte, apiKey string) *Error {
	e := &Error{Op: cl.op, Status: resp.StatusCode}
	own, ok := ownError(resp.StatusCode, raw)
	if ok {
		e.Message = own.message
		e.Details = own.details
	} else {
		e.Message = describeForeign(resp.Header.Get("Content-Type"), raw, apiKey)
	}
	e.Kind = classify(cl.claim, readAs, e.Message, ok)
	// An answer that echoes the key does not put it in the error, and
	// one of megabytes does not make an error of megabytes (it goes to
	// logs and to Temporal, whose messages have a size limit): redacted,
	// then cut.
	e.Message = Clip(redactKey(e.Message, apiKey), maxErrorText, "… (cut)")
	if len(e.Details) > maxErrorDetails {
		e.Details = append(e.Details[:maxErrorDetails], fmt.Sprintf("and %d more", len(e.Details)-maxErrorDetails))
	}
	for i, d := range e.Details {
		e.Details[i] = Clip(redactKey(d, apiKey), maxErrorText/4, "… (cut)")
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return e
}

// Bounds of what an error quotes from TaskManager's error answer.
const (
	maxErrorText    = 1000 // bytes of its message; a detail gets a quarter
	maxErrorDetails = 10
)

// tmError is an error answer in one of TaskManager's own shapes.
type tmError struct {
	message string
	details []string
}

// ownError reads TaskManager's own error answer: a JSON object with
// "success": false and a string "error" (and maybe "details"), or, with
// status 401, the shape {"error": "Unauthorized", "message": "…",
// "timestamp": …}. It reports false for anything else.
func ownError(status int, raw []byte) (tmError, bool) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return tmError{}, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(trimmed, &m) != nil {
		return tmError{}, false
	}
	errText, ok := jsonString(m["error"])
	if !ok {
		return tmError{}, false
	}
	message, hasMessage := jsonString(m["message"])
	if string(bytes.TrimSpace(m["success"])) == "false" {
		e := tmError{message: firstNonEmpty(errText, message)}
		var ds []string
		if json.Unmarshal(m["details"], &ds) == nil {
			e.details = ds
		}
		return e, true
	}
	_, hasSuccess := m["success"]
	_, hasTimestamp := m["timestamp"]
	if status == http.StatusUnauthorized && !hasSuccess && hasTimestamp && hasMessage {
		// "error" is "Unauthorized", "message" says why
		return tmError{message: firstNonEmpty(message, errText)}, true
	}
	return tmError{}, false
}

// jsonString returns a JSON string's value; false for anything else.
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// describeForeign says what came back when it is not TaskManager's answer:
// its content type and size, and a JSON message if it has one that does
// not contain apiKey. It never copies an HTML or text body.
func describeForeign(contentType string, raw []byte, apiKey string) string {
	if contentType == "" {
		contentType = "no content type"
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return fmt.Sprintf("empty answer (%s, %d bytes), not TaskManager's", contentType, len(raw))
	}
	if trimmed[0] == '{' && json.Valid(trimmed) {
		desc := fmt.Sprintf("answer is not TaskManager's error JSON (%s, %d bytes)", contentType, len(raw))
		var env struct {
			Error   any `json:"error"`
			Message any `json:"message"`
		}
		if json.Unmarshal(trimmed, &env) == nil {
			for _, v := range []any{env.Error, env.Message} {
				if s, ok := v.(string); ok && strings.TrimSpace(s) != "" && (apiKey == "" || !strings.Contains(s, apiKey)) {
					return desc + ": " + strconv.Quote(clipText(strings.TrimSpace(s), 200))
				}
			}
		}
		return desc
	}
	if json.Valid(trimmed) {
		return fmt.Sprintf("answer is JSON but not an object (%s, %d bytes)", contentType, len(raw))
	}
	return fmt.Sprintf("answer is not JSON (%s, %d bytes)", contentType, len(raw))
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// redirected says where a 3xx answer points. The Client follows no
// redirect: the API key goes to the configured TaskManager only. It is
// transient, like any answer that is not TaskManager's own, so a proxy
// that redirects for a while (a maintenance page) delays calls without
// failing outcomes; the message says what to fix when it lasts.
func redirected(resp *http.Response) string {
	to, err := resp.Location()
	if err != nil {
		return "redirect without a usable Location; tmbridge follows no redirect"
	}
	// Its scheme and host only: a gateway may echo the API key in the
	// path, escaped in ways redactKey does not know.
	return "redirected to " + (&url.URL{Scheme: to.Scheme, Host: to.Host}).String() + "; tmbridge follows no redirect (point api_url at TaskManager itself)"
}

// netError turns a deadline into a plain timeout error that says so.
func netError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("timeout: %w", err)
	}
	return err
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
