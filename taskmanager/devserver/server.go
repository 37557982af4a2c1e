// Package devserver is an in-memory PrismQ TaskManager for development and
// tests. It follows the queue semantics of the contract exactly and answers
// either in the documented shapes or as the PHP deployment really does
// (StylePHP: 500 on an empty claim, broken type listing, {items:[row]}
// wrappers, ids as strings in some answers, "message":"Success", claimed_by
// kept after completion, {} results stored as null, …). StylePHP answers
// the conversation recorded from the real deployment
// (testdata/php-recorded-conversation.json) key for key. In both styles a
// result or error longer than a MySQL TEXT column, measured as PHP stores
// it (taskmanager.StoredResultSize, StoredTextSize), gets PHP's 500
// "Data too long for column" and leaves the task as it was.
//
// Tests start one on a free loopback port, inject faults and read back what
// happened:
//
//	srv := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
//	url := srv.Start(t) // http://127.0.0.1:port/api
//	srv.InjectFault(devserver.Fault{Path: "/complete", Status: 503, Count: 3})
//	calls := srv.Completions("1")
package devserver

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/prismq/tmbridge/taskmanager"
)

var english = message.NewPrinter(language.English)

// Style selects how the server answers.
type Style string

// Answer styles.
const (
	StyleDocumented Style = "documented" // the API reference and OpenAPI file
	StylePHP        Style = "php"        // the PHP deployment as observed
)

// MaxTextBytes is what a MySQL TEXT column (result_json, error_message)
// holds: taskmanager.MaxStoredBytes. A completion whose stored value
// (taskmanager.StoredResultSize, taskmanager.StoredTextSize) is longer gets
// the PHP deployment's 500 "Data too long for column" in both styles, and
// the task is left as it was.
const MaxTextBytes = taskmanager.MaxStoredBytes

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes
// is 0.
const DefaultMaxBodyBytes = 16 << 20

// Options configure a Server. Zero values take the defaults.
type Options struct {
	Style        Style         // default StyleDocumented
	APIKey       string        // when set, every call but /health needs it (compared in constant time)
	ClaimTimeout time.Duration // default 300s (TASK_CLAIM_TIMEOUT)
	MaxAttempts  int           // default 3 (MAX_TASK_ATTEMPTS)
	MaxBodyBytes int64         // larger request bodies get 413; default DefaultMaxBodyBytes; negative: no limit
	Logger       *slog.Logger  // request log; default none
	// Now overrides the clock (tests of the claim timeout).
	Now func() time.Time
}

// Server is an in-memory TaskManager. Its methods are safe for concurrent use.
type Server struct {
	opts Options

	apiKeyHash [sha256.Size]byte // of opts.APIKey

	mu        sync.Mutex
	types     map[string]*taskType // by name
	typesByID map[int64]*taskType
	tasks     map[int64]*task
	order     []int64
	dedupe    map[string]int64
	nextType  int64
	nextTask  int64
	faults    []*Fault
	record    record
	mux       *http.ServeMux
}

type taskType struct {
	id        int64
	name      string
	version   string
	schemaRaw json.RawMessage
	schema    *jsonschema.Schema
	created   time.Time
	updated   time.Time
}

type task struct {
	id          int64
	typ         *taskType
	status      string
	params      json.RawMessage
	result      json.RawMessage
	errMsg      string
	attempts    int
	priority    int
	claimedBy   string
	claimedAt   time.Time
	progress    int
	dedupeKey   string
	createdAt   time.Time
	completedAt time.Time
	lateClaim   bool // its current claim was served late (Fault.Late)
}

// New returns a Server.
func New(opts Options) *Server {
	if opts.Style == "" {
		opts.Style = StyleDocumented
	}
	if opts.ClaimTimeout <= 0 {
		opts.ClaimTimeout = 300 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s := &Server{
		opts:       opts,
		apiKeyHash: sha256.Sum256([]byte(opts.APIKey)),
		types:      map[string]*taskType{},
		typesByID:  map[int64]*taskType{},
		tasks:      map[int64]*task{},
		dedupe:     map[string]int64{},
	}
	s.mux = s.routes()
	return s
}

// Style returns the answer style.
func (s *Server) Style() Style { return s.opts.Style }

// Start serves on a free 127.0.0.1 port until the test ends and returns the
// API base URL (ending in /api).
func (s *Server) Start(tb testing.TB) string {
	tb.Helper()
	ts := httptest.NewServer(s.Handler())
	tb.Cleanup(ts.Close)
	return ts.URL + "/api"
}

// Listen serves on addr (e.g. 127.0.0.1:8000; empty: a free loopback
// port) and returns the server and its API base URL. Close the server to
// stop.
func (s *Server) Listen(addr string) (*http.Server, string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return hs, "http://" + ln.Addr().String() + "/api", nil
}

// Handler returns the HTTP handler; it serves the API under /api.
func (s *Server) Handler() http.Handler { return s.middleware(s.mux) }

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", s.health)
	mux.HandleFunc("POST /api/task-types/register", s.registerType)
	mux.HandleFunc("GET /api/task-types/{name}", s.getType)
	mux.HandleFunc("GET /api/task-types", s.listTypes)
	mux.HandleFunc("POST /api/tasks", s.createTask)
	mux.HandleFunc("GET /api/tasks", s.listTasks)
	mux.HandleFunc("POST /api/tasks/claim", s.claim)
	mux.HandleFunc("GET /api/tasks/{id}", s.getTask)
	mux.HandleFunc("POST /api/tasks/{id}/progress", s.progress)
	mux.HandleFunc("POST /api/tasks/{id}/complete", s.complete)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, http.StatusNotFound, "Endpoint not found")
	})
	return mux
}

func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Logger != nil {
			s.opts.Logger.Debug("request", "method", r.Method, "path", r.URL.Path)
		}
		if s.opts.MaxBodyBytes > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
		}
		if s.applyFault(w, r) {
			return
		}
		if r.URL.Path != "/api/health" && s.opts.APIKey != "" && !s.keyOK(r.Header.Get("X-API-Key")) {
			msg := "Invalid or missing API key. Provide a valid API key in the X-API-Key header."
			if s.php() {
				msg = "Invalid or missing API key. Include X-API-Key header with your request."
			}
			writeJSON(w, http.StatusUnauthorized, map[string]any{
				"error":     "Unauthorized",
				"message":   msg,
				"timestamp": s.opts.Now().UTC().Format("2006-01-02T15:04:05+00:00"),
			})
			return
		}
		if s.opts.MaxBodyBytes > 0 && r.ContentLength > s.opts.MaxBodyBytes {
			s.fail(w, http.StatusRequestEntityTooLarge, "Request body too large")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// keyOK compares an X-API-Key with the server's in constant time: the
// hashes have the same length whatever the key, so neither its bytes nor
// its length show in the time an answer takes.
func (s *Server) keyOK(got string) bool {
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], s.apiKeyHash[:]) == 1
}

// ---- answers ----

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ok answers a success. The PHP deployment's top-level message is always
// "Success"; some of its answers carry their own message inside data
// (withMessage).
func (s *Server) ok(w http.ResponseWriter, status int, message string, data any) {
	if s.php() {
		message = "Success"
	}
	writeJSON(w, status, map[string]any{"success": true, "message": message, "data": data, "timestamp": s.opts.Now().Unix()})
}

// withMessage adds the PHP deployment's data.message to an answer's data.
func (s *Server) withMessage(data map[string]any, message string) map[string]any {
	if s.php() {
		data["message"] = message
	}
	return data
}

// invalid answers 400 "Validation failed" with one detail. The PHP
// deployment repeats the detail six times.
func (s *Server) invalid(w http.ResponseWriter, detail string) {
	details := []string{detail}
	if s.php() {
		details = []string{detail, detail, detail, detail, detail, detail}
	}
	s.fail(w, http.StatusBadRequest, "Validation failed", details...)
}

func (s *Server) fail(w http.ResponseWriter, status int, msg string, details ...string) {
	body := map[string]any{"success": false, "error": msg, "timestamp": s.opts.Now().Unix()}
	if len(details) > 0 {
		body["details"] = details
	}
	writeJSON(w, status, body)
}

func (s *Server) php() bool { return s.opts.Style == StylePHP }

// claimExpired reports whether t's claim is older than the claim timeout.
// PHP stores claimed_at in whole seconds and hands a claim out again once
// it is strictly older than now minus the timeout, in whole seconds: up
// to a second later than the timeout says.
func (s *Server) claimExpired(t *task, now time.Time) bool {
	if s.php() {
		return now.Unix()-t.claimedAt.Unix() > int64(s.opts.ClaimTimeout/time.Second)
	}
	return now.Sub(t.claimedAt) > s.opts.ClaimTimeout
}

// idOut writes an id as the PHP deployment does in answers that send it
// as a string (create, complete, progress, register).
func (s *Server) idOut(id int64) any {
	if s.php() {
		return strconv.FormatInt(id, 10)
	}
	return id
}

// one answers a single row: {items:[row]} (PHP) or the row itself.
func (s *Server) one(w http.ResponseWriter, row map[string]any, notFound string) {
	if s.php() {
		items := []any{}
		if row != nil {
			items = append(items, row)
		}
		s.ok(w, http.StatusOK, "OK", map[string]any{"items": items, "count": len(items)})
		return
	}
	if row == nil {
		s.fail(w, http.StatusNotFound, notFound)
		return
	}
	s.ok(w, http.StatusOK, "OK", row)
}

func ts(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.Format("2006-01-02 15:04:05")
}

func (s *Server) typeRow(t *taskType) map[string]any {
	var active any = true
	if s.php() {
		active = 1
	}
	return map[string]any{
		"id": t.id, "name": t.name, "version": t.version, "param_schema": t.schemaRaw,
		"is_active": active, "created_at": ts(t.created), "updated_at": ts(t.updated),
	}
}

// taskRow is a task as GET /tasks/{id} answers it. The PHP deployment's
// row has no type_id and no dedupe_key.
func (s *Server) taskRow(t *task) map[string]any {
	if s.php() {
		return map[string]any{
			"id": t.id, "type": t.typ.name, "status": t.status,
			"params": t.params, "result": nullIfEmpty(t.result), "error_message": nullIfEmpty(t.errMsg),
			"priority": t.priority, "progress": t.progress, "attempts": t.attempts, "claimed_by": nullIfEmpty(t.claimedBy),
			"claimed_at": ts(t.claimedAt), "completed_at": ts(t.completedAt), "created_at": ts(t.createdAt),
		}
	}
	row := map[string]any{
		"id": t.id, "type_id": t.typ.id, "type": t.typ.name, "status": t.status,
		"params": t.params, "result": nil, "error_message": nil,
		"attempts": t.attempts, "priority": t.priority, "progress": t.progress,
		"claimed_by": nil, "dedupe_key": t.dedupeKey,
		"created_at": ts(t.createdAt), "claimed_at": ts(t.claimedAt), "completed_at": ts(t.completedAt),
	}
	if len(t.result) > 0 {
		row["result"] = t.result
	}
	if t.errMsg != "" {
		row["error_message"] = t.errMsg
	}
	if t.claimedBy != "" {
		row["claimed_by"] = t.claimedBy
	}
	return row
}

// listRow is a task as GET /tasks lists it: the PHP deployment's list rows
// carry no params, result or error.
func (s *Server) listRow(t *task) map[string]any {
	if !s.php() {
		return s.taskRow(t)
	}
	return map[string]any{
		"id": t.id, "type": t.typ.name, "status": t.status, "priority": t.priority, "progress": t.progress,
		"attempts": t.attempts, "claimed_by": nullIfEmpty(t.claimedBy),
		"created_at": ts(t.createdAt), "completed_at": ts(t.completedAt),
	}
}

// nullIfEmpty turns an empty string or raw value into JSON null.
func nullIfEmpty[T ~string | ~[]byte](v T) any {
	if len(v) == 0 {
		return nil
	}
	return v
}

// ---- request bodies ----

// decodeBody reads a JSON object body into a map, answering 400 when it is not one.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	var m map[string]json.RawMessage
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<20))
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		s.fail(w, http.StatusRequestEntityTooLarge, "Request body too large")
		return nil, false
	}
	if err == nil {
		err = json.Unmarshal(body, &m)
	}
	// PHP's json_decode refuses a body that is not UTF-8 (JSON_ERROR_UTF8),
	// where encoding/json would take its bad bytes as U+FFFD.
	if err != nil || m == nil || !utf8.Valid(body) {
		s.fail(w, http.StatusBadRequest, "Invalid JSON in request body")
		return nil, false
	}
	return m, true
}

func str(m map[string]json.RawMessage, k string) (string, bool) {
	var v string
	raw, ok := m[k]
	if !ok || json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	return v, true
}

func isObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}

// ---- endpoints ----

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	data := map[string]any{"status": "healthy", "timestamp": s.opts.Now().Unix()}
	if s.php() {
		data["database"] = "connected"
	}
	s.ok(w, http.StatusOK, "API is healthy", data)
}

func (s *Server) registerType(w http.ResponseWriter, r *http.Request) {
	m, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	name, _ := str(m, "name")
	version, _ := str(m, "version")
	schemaRaw := m["param_schema"]
	for _, f := range []struct {
		k  string
		ok bool
	}{{"name", name != ""}, {"version", version != ""}, {"param_schema", isObject(schemaRaw)}} {
		if !f.ok {
			s.fail(w, http.StatusBadRequest, "Missing required field: "+f.k)
			return
		}
	}
	schema, err := compileSchema(schemaRaw)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "Invalid param_schema: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if t, exists := s.types[name]; exists {
		t.version, t.schemaRaw, t.schema, t.updated = version, schemaRaw, schema, now
		data := map[string]any{"id": t.id, "name": name, "version": version, "created": false, "updated": true}
		if s.php() { // only "updated", and the id as a number
			delete(data, "created")
		}
		s.ok(w, http.StatusOK, "Task type updated", data)
		return
	}
	s.nextType++
	t := &taskType{id: s.nextType, name: name, version: version, schemaRaw: schemaRaw, schema: schema, created: now, updated: now}
	s.types[name], s.typesByID[t.id] = t, t
	status := http.StatusCreated
	if s.php() {
		status = http.StatusOK
	}
	data := map[string]any{"id": s.idOut(t.id), "name": name, "version": version, "created": true, "updated": false}
	if s.php() { // only "created", and the id as a string
		delete(data, "updated")
	}
	s.ok(w, status, "Task type registered", data)
}

func compileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("param_schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("param_schema.json")
}

func (s *Server) getType(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var row map[string]any
	if t, ok := s.types[r.PathValue("name")]; ok {
		row = s.typeRow(t)
	}
	s.one(w, row, "Task type not found")
}

func (s *Server) listTypes(w http.ResponseWriter, r *http.Request) {
	if s.php() {
		s.fail(w, http.StatusInternalServerError, "Invalid select field: COALESCE(t.usage_count, 0) as usage_count")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := []any{}
	ids := make([]int64, 0, len(s.typesByID))
	for id := range s.typesByID {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		rows = append(rows, s.typeRow(s.typesByID[id]))
	}
	s.ok(w, http.StatusOK, "OK", map[string]any{"task_types": rows, "count": len(rows)})
}

func (s *Server) createTask(w http.ResponseWriter, r *http.Request) {
	m, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	name, _ := str(m, "type")
	if name == "" {
		s.fail(w, http.StatusBadRequest, "Missing required field: type")
		return
	}
	params, has := m["params"]
	if !has {
		s.fail(w, http.StatusBadRequest, "Missing required field: params")
		return
	}
	if !isObject(params) || (s.php() && string(canonical(params)) == "{}") {
		// PHP decodes {} to an empty array, which is not an object.
		s.invalid(w, "Field 'params' must be of type object")
		return
	}
	var priority int
	if raw, ok := m["priority"]; ok {
		_ = json.Unmarshal(raw, &priority)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.types[name]
	if !ok {
		s.fail(w, http.StatusNotFound, "Task type not found")
		return
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(params)))
	if err == nil {
		err = t.schema.Validate(inst)
	}
	if err != nil {
		s.fail(w, http.StatusBadRequest, "Parameter validation failed: "+schemaMessage(err))
		return
	}
	canon := canonical(params)
	key := dedupeKey(name, canon)
	if id, dup := s.dedupe[key]; dup {
		existing := s.tasks[id]
		if s.php() {
			s.ok(w, http.StatusOK, "", map[string]any{"id": id, "status": existing.status, "deduplicated": true, "message": "Task already exists (deduplicated)"})
			return
		}
		s.ok(w, http.StatusOK, "Task already exists", map[string]any{"id": id, "type": name, "status": existing.status, "dedupe_key": key, "deduplicated": true, "duplicate": true})
		return
	}
	stored := canon
	if s.php() {
		// Stored as json_encode(json_decode($params, true)): a nested {}
		// comes back as [] (taskmanager.PHPResult's rules).
		if p, err := taskmanager.PHPResult(canon); err == nil && p != nil {
			stored = p
		}
	}
	s.nextTask++
	tk := &task{id: s.nextTask, typ: t, status: "pending", params: stored, priority: priority, dedupeKey: key, createdAt: s.opts.Now()}
	s.tasks[tk.id] = tk
	s.order = append(s.order, tk.id)
	s.dedupe[key] = tk.id
	if s.php() {
		s.ok(w, http.StatusOK, "", map[string]any{"id": s.idOut(tk.id), "type": name, "status": "pending", "dedupe_key": key, "message": "Task created successfully"})
		return
	}
	s.ok(w, http.StatusCreated, "Task created", map[string]any{"id": s.idOut(tk.id), "type": name, "status": "pending", "dedupe_key": key, "deduplicated": false, "duplicate": false})
}

// dedupeKey is the PHP deployment's dedupe key: the hex SHA-256 of the
// type name, a NUL byte and the params as compact JSON. It reproduces the
// recorded keys; how PHP orders keys and escapes "/" and non-ASCII text in
// that JSON is not known from the recording (canonical sorts keys and
// leaves both unescaped).
func dedupeKey(typeName string, canonicalParams []byte) string {
	h := sha256.New()
	h.Write([]byte(typeName))
	h.Write([]byte{0})
	h.Write(canonicalParams)
	return hex.EncodeToString(h.Sum(nil))
}

// canonical returns compact JSON with sorted keys and exact numbers: the
// form two identical params share, whatever their spacing or key order.
func canonical(raw json.RawMessage) json.RawMessage {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return raw
	}
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // PHP's json_encode leaves < > & alone
	if enc.Encode(v) != nil {
		return raw
	}
	return json.RawMessage(strings.TrimSuffix(buf.String(), "\n"))
}

// schemaMessage shortens a validation error to its first cause.
func schemaMessage(err error) string {
	if ve, ok := err.(*jsonschema.ValidationError); ok {
		for len(ve.Causes) > 0 {
			ve = ve.Causes[0]
		}
		loc := strings.Join(ve.InstanceLocation, ".")
		switch k := ve.ErrorKind.(type) {
		case *kind.Required: // the PHP deployment's wording
			return "Missing required property: " + loc + "." + strings.Join(k.Missing, ", .")
		case *kind.Type:
			return fmt.Sprintf("Type mismatch at %s: expected %s, got %s", loc, strings.Join(k.Want, " or "), k.Got)
		}
		return fmt.Sprintf("%s at .%s", ve.ErrorKind.LocalizedString(english), loc)
	}
	return err.Error()
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, offset := 10, 0
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v > 0 {
		limit = v
	}
	if v, err := strconv.Atoi(q.Get("offset")); err == nil && v > 0 {
		offset = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rows := []any{}
	skipped := 0
	for i := len(s.order) - 1; i >= 0 && len(rows) < limit; i-- {
		t := s.tasks[s.order[i]]
		if st := q.Get("status"); st != "" && t.status != st {
			continue
		}
		if p := q.Get("type"); p != "" && !like(t.typ.name, p) {
			continue
		}
		if skipped < offset {
			skipped++
			continue
		}
		rows = append(rows, s.listRow(t))
	}
	key := "tasks"
	if s.php() {
		key = "items"
	}
	s.ok(w, http.StatusOK, "OK", map[string]any{key: rows, "count": len(rows)})
}

// like matches SQL LIKE patterns (% and _), case-insensitively as MySQL does.
func like(s, pattern string) bool {
	s, pattern = strings.ToLower(s), strings.ToLower(pattern)
	if pattern == "" {
		return s == ""
	}
	switch pattern[0] {
	case '%':
		for i := 0; i <= len(s); i++ {
			if like(s[i:], pattern[1:]) {
				return true
			}
		}
		return false
	case '_':
		return s != "" && like(s[1:], pattern[1:])
	default:
		return s != "" && s[0] == pattern[0] && like(s[1:], pattern[1:])
	}
}

// taskFor finds the task in the path; it answers 404 itself when unknown.
func (s *Server) taskFor(w http.ResponseWriter, r *http.Request) *task {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	t := s.tasks[id]
	if err != nil || t == nil {
		s.fail(w, http.StatusNotFound, "Task not found")
		return nil
	}
	return t
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	var row map[string]any
	if t := s.tasks[id]; err == nil && t != nil {
		row = s.taskRow(t)
	}
	s.one(w, row, "Task not found")
}

var sortColumns = map[string]bool{"created_at": true, "priority": true, "id": true, "attempts": true}

func (s *Server) claim(w http.ResponseWriter, r *http.Request) {
	m, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	worker, _ := str(m, "worker_id")
	if worker == "" {
		s.fail(w, http.StatusBadRequest, "Missing required field: worker_id")
		return
	}
	var typeID int64
	if raw, ok := m["task_type_id"]; !ok {
		s.fail(w, http.StatusBadRequest, "Missing required field: task_type_id")
		return
	} else if json.Unmarshal(raw, &typeID) != nil || typeID <= 0 {
		s.fail(w, http.StatusBadRequest, "task_type_id must be a positive integer")
		return
	}
	sortBy, _ := str(m, "sort_by")
	if sortBy == "" {
		sortBy = "created_at"
	}
	order, _ := str(m, "sort_order")
	if order == "" {
		order = "ASC"
	}
	order = strings.ToUpper(order)
	if !sortColumns[sortBy] || (order != "ASC" && order != "DESC") {
		switch {
		case !s.php():
			s.fail(w, http.StatusBadRequest, "Invalid sort_by or sort_order")
		case !sortColumns[sortBy]:
			s.fail(w, http.StatusBadRequest, "Invalid sort_by field. Allowed values: created_at, priority, id, attempts")
		default: // not recorded; worded like the sort_by answer
			s.fail(w, http.StatusBadRequest, "Invalid sort_order field. Allowed values: ASC, DESC")
		}
		return
	}
	pattern, _ := str(m, "type_pattern")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.record.claims++
	now := s.opts.Now()
	var best *task
	var held []string // tasks claimed by this worker (ClaimEvent.Held)
	for _, id := range s.order {
		t := s.tasks[id]
		if t.status == "claimed" && t.claimedBy == worker && !t.lateClaim {
			held = append(held, strconv.FormatInt(t.id, 10))
		}
		if t.typ.id != typeID || (pattern != "" && !like(t.typ.name, pattern)) {
			continue
		}
		if !(t.status == "pending" || (t.status == "claimed" && s.claimExpired(t, now))) {
			continue
		}
		if best == nil || before(t, best, sortBy, order == "DESC") {
			best = t
		}
	}
	if best == nil {
		if s.php() {
			s.fail(w, http.StatusInternalServerError, "There is no active transaction")
		} else {
			s.fail(w, http.StatusNotFound, "No tasks available")
		}
		return
	}
	if best.status == "claimed" && best.claimedBy == worker {
		held = slices.DeleteFunc(held, func(id string) bool { return id == strconv.FormatInt(best.id, 10) }) // only OTHER tasks count
	}
	best.status, best.claimedBy, best.claimedAt, best.lateClaim = "claimed", worker, now, isLate(r)
	best.attempts++
	s.record.claimed++
	s.record.claimEvents = append(s.record.claimEvents, ClaimEvent{
		TaskID: strconv.FormatInt(best.id, 10), WorkerID: worker, Attempts: best.attempts, HeldByWorker: len(held), Held: held, At: now, Late: isLate(r),
	})
	s.ok(w, http.StatusOK, "Task claimed successfully", s.withMessage(map[string]any{
		"id": best.id, "type": best.typ.name, "params": best.params, "attempts": best.attempts, "priority": best.priority,
	}, "Task claimed successfully"))
}

// before orders candidates by the sort column, then by id.
func before(a, b *task, by string, desc bool) bool {
	var av, bv int64
	switch by {
	case "created_at":
		av, bv = a.createdAt.UnixNano(), b.createdAt.UnixNano()
	case "priority":
		av, bv = int64(a.priority), int64(b.priority)
	case "attempts":
		av, bv = int64(a.attempts), int64(b.attempts)
	}
	if av == bv {
		av, bv = a.id, b.id
	}
	if desc {
		return av > bv
	}
	return av < bv
}

// checkClaim applies the rules shared by progress and complete: 400 when not
// claimed, 403 when claimed by another worker.
func (s *Server) checkClaim(w http.ResponseWriter, t *task, worker string) bool {
	if t.status != "claimed" {
		s.fail(w, http.StatusBadRequest, "Task is not in claimed state")
		return false
	}
	if t.claimedBy != worker {
		s.fail(w, http.StatusForbidden, "Task is claimed by another worker")
		return false
	}
	return true
}

func (s *Server) progress(w http.ResponseWriter, r *http.Request) {
	m, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	worker, _ := str(m, "worker_id")
	message, _ := str(m, "message")
	var pct float64
	raw, has := m["progress"]
	if worker == "" || !has || json.Unmarshal(raw, &pct) != nil {
		s.invalid(w, "Fields 'worker_id' and 'progress' are required")
		return
	}
	if pct < 0 || pct > 100 {
		detail := "Field 'progress' must be at most 100"
		if pct < 0 {
			detail = "Field 'progress' must be at least 0"
		}
		s.invalid(w, detail)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.taskFor(w, r)
	rec := ProgressCall{TaskID: r.PathValue("id"), WorkerID: worker, Progress: int(pct), Message: message}
	if t == nil || !s.checkClaim(w, t, worker) {
		s.record.progress = append(s.record.progress, rec)
		return
	}
	rec.Accepted = true
	s.record.progress = append(s.record.progress, rec)
	t.progress = int(pct)
	s.ok(w, http.StatusOK, "Progress updated", s.withMessage(map[string]any{"id": s.idOut(t.id), "progress": t.progress}, "Task progress updated successfully"))
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	m, ok := s.decodeBody(w, r)
	if !ok {
		return
	}
	worker, _ := str(m, "worker_id")
	var success bool
	rawSuccess, has := m["success"]
	if worker == "" || !has || json.Unmarshal(rawSuccess, &success) != nil {
		s.invalid(w, "Fields 'worker_id' and 'success' are required")
		return
	}
	result := m["result"]
	errMsg, _ := str(m, "error")
	if success && len(result) > 0 && string(result) != "null" && !isObject(result) {
		s.invalid(w, "Field 'result' must be of type object")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	rec := CompletionCall{TaskID: r.PathValue("id"), WorkerID: worker, Success: success, Result: result, Error: errMsg, At: now, Late: isLate(r)}
	defer func() { s.record.completions = append(s.record.completions, rec) }()
	t := s.taskFor(w, r)
	if t == nil {
		rec.Status = http.StatusNotFound
		return
	}
	rec.StatusBefore, rec.AttemptsBefore, rec.ClaimedByBefore = t.status, t.attempts, t.claimedBy
	if success && t.status == "completed" {
		rec.DuplicateSuccess = true
	}
	if !s.checkClaim(w, t, worker) {
		rec.Status = http.StatusBadRequest
		if t.status == "claimed" {
			rec.Status = http.StatusForbidden
		}
		return
	}
	// MySQL TEXT columns: PHP stores the result re-encoded and the error as
	// its bytes; a longer value is a 500 and nothing changes.
	column := ""
	switch {
	case success && taskmanager.StoredResultSize(result) > MaxTextBytes:
		column = "result_json"
	case !success && taskmanager.StoredTextSize(errMsg) > MaxTextBytes:
		column = "error_message"
	}
	if column != "" {
		rec.Status = http.StatusInternalServerError
		s.fail(w, http.StatusInternalServerError, "SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column '"+column+"' at row 1")
		return
	}
	rec.Status, rec.Accepted = http.StatusOK, true
	t.completedAt = now
	if !s.php() {
		t.claimedBy = "" // the PHP deployment keeps claimed_by
	}
	var status string
	if success {
		t.status, t.result, t.errMsg = "completed", result, ""
		if s.php() {
			// PHP stores json_encode(json_decode($result, true)): {} as
			// NULL, nested {} as [], {"0":…,"1":…} as a list.
			t.result, _ = taskmanager.PHPResult(result)
		}
		if !s.php() {
			t.progress = 100 // the PHP deployment leaves progress as reported
		}
		status = "completed"
	} else {
		t.errMsg = errMsg
		if t.attempts < s.opts.MaxAttempts {
			t.status, status = "pending", "pending (retry)"
		} else {
			t.status, status = "failed", "failed"
		}
	}
	s.ok(w, http.StatusOK, "Task completed", s.withMessage(map[string]any{"id": s.idOut(t.id), "status": status}, "Task completed"))
}
