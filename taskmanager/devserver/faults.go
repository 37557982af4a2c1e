package devserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Fault changes how the server answers matching requests, to test a
// client's behaviour on outages, slowness, garbage and rate limits.
type Fault struct {
	// Path matches requests whose path contains it ("" matches all),
	// e.g. "/complete", "/tasks/claim".
	Path string
	// Method matches the HTTP method ("" matches all).
	Method string
	// Query matches requests whose raw query contains it ("" matches
	// all), e.g. "status=claimed".
	Query string
	// Status, when set, answers with it instead of serving the request.
	Status int
	// Body is the answer body with Status (default: a JSON error). Use it
	// for garbage: "<html>…", "", "{\"success\":tr".
	Body string
	// RetryAfter is sent as Retry-After (in whole seconds) with Status.
	RetryAfter time.Duration
	// Latency delays the request before it is answered or served.
	Latency time.Duration
	// Count limits the fault to the next Count matching requests; 0 means
	// until Until or until ClearFaults.
	Count int
	// Until ends the fault at this time (zero: no end).
	Until time.Time
	// After lets the request be served and then answers with Status, so
	// the change happens but its answer is lost.
	After bool
	// Late, with Latency, serves the request after the latency even when
	// the client has given up meanwhile: the change lands after the client
	// saw a timeout (a slow database behind PHP).
	Late bool
	// Matched, when set, is sent to (without blocking) as a request
	// matches the fault, before its latency: a test learns that the
	// request is under way.
	Matched chan<- struct{}
}

// InjectFault adds a fault; faults are tried in the order added.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// applyFault serves a matching fault and reports whether the request is done.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	var f *Fault
	now := s.opts.Now()
	kept := s.faults[:0]
	for _, cand := range s.faults {
		if !cand.Until.IsZero() && now.After(cand.Until) {
			continue // expired
		}
		kept = append(kept, cand)
		if f == nil && strings.Contains(r.URL.Path, cand.Path) && strings.Contains(r.URL.RawQuery, cand.Query) && (cand.Method == "" || cand.Method == r.Method) {
			f = cand
			if f.Count > 0 {
				f.Count--
				if f.Count == 0 {
					kept = kept[:len(kept)-1]
				}
			}
		}
	}
	s.faults = kept
	s.mu.Unlock()
	if f == nil {
		return false
	}
	if f.Matched != nil {
		select {
		case f.Matched <- struct{}{}:
		default:
		}
	}
	if f.Latency > 0 {
		start := time.Now()
		// Read the body first: only then does the server notice a client
		// that gives up, and cancel r.Context().
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			if f.Late {
				time.Sleep(time.Until(start.Add(f.Latency)))
				s.mux.ServeHTTP(discard{}, r.WithContext(context.WithValue(context.WithoutCancel(r.Context()), lateKey{}, true)))
			}
			return true
		}
	}
	if f.Status == 0 {
		return false
	}
	if f.After {
		s.mux.ServeHTTP(discard{}, r)
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((f.RetryAfter+time.Second-1)/time.Second)))
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Body))
		return true
	}
	writeJSON(w, f.Status, map[string]any{"success": false, "error": http.StatusText(f.Status), "timestamp": now.Unix()})
	return true
}

// discard is a ResponseWriter that drops the answer (Fault.After).
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// ---- what happened ----

// CompletionCall is one POST /tasks/{id}/complete, accepted or not.
type CompletionCall struct {
	TaskID   string
	WorkerID string
	Success  bool
	Result   json.RawMessage
	Error    string
	Status   int  // HTTP status answered
	Accepted bool // the outcome was recorded
	// DuplicateSuccess: success:true for a task already completed.
	DuplicateSuccess bool
	// The task's state when the call arrived; empty for an unknown task.
	StatusBefore    string
	AttemptsBefore  int
	ClaimedByBefore string
	// At is the server's time (Options.Now) when the call was handled.
	At time.Time
	// Late: a Fault.Late served the call after its client had given up,
	// so it was sent earlier than At.
	Late bool
}

// lateKey marks a request a Fault.Late serves after its client gave up.
type lateKey struct{}

func isLate(r *http.Request) bool { return r.Context().Value(lateKey{}) != nil }

// ClaimEvent is one claim that returned a task.
type ClaimEvent struct {
	TaskID   string
	WorkerID string
	Attempts int // the task's attempts after this claim
	// HeldByWorker is how many OTHER tasks were claimed by WorkerID at that
	// moment (status claimed, claimed_by WorkerID), whether or not their
	// claim had timed out.
	HeldByWorker int
	// Held lists those tasks' ids. Tasks whose claim a Fault.Late served
	// are left out of both: their client had given up on that claim.
	Held []string
	// Late: a Fault.Late served this claim after its client gave up.
	Late bool
	At   time.Time // the server's time (Options.Now)
}

// ProgressCall is one POST /tasks/{id}/progress, accepted or not.
type ProgressCall struct {
	TaskID   string
	WorkerID string
	Progress int
	Message  string
	Accepted bool
}

type record struct {
	claims      int // claim calls
	claimed     int // claims that returned a task
	completions []CompletionCall
	progress    []ProgressCall
	claimEvents []ClaimEvent
}

// Stats sums up what happened.
type Stats struct {
	ClaimCalls          int // every claim call
	Claimed             int // claims that returned a task
	CompleteCalls       int // every complete call
	AcceptedCompletions int
	RejectedCompletions int
	DuplicateSuccesses  int // success:true calls for tasks already completed
	ProgressCalls       int
}

// Stats returns counts of what happened so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{ClaimCalls: s.record.claims, Claimed: s.record.claimed, CompleteCalls: len(s.record.completions), ProgressCalls: len(s.record.progress)}
	for _, c := range s.record.completions {
		if c.Accepted {
			st.AcceptedCompletions++
		} else {
			st.RejectedCompletions++
		}
		if c.DuplicateSuccess {
			st.DuplicateSuccesses++
		}
	}
	return st
}

// Completions returns every complete call for a task, in order.
func (s *Server) Completions(taskID string) []CompletionCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CompletionCall
	for _, c := range s.record.completions {
		if c.TaskID == taskID {
			out = append(out, c)
		}
	}
	return out
}

// Claims returns every claim that returned a task, in order.
func (s *Server) Claims() []ClaimEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ClaimEvent(nil), s.record.claimEvents...)
}

// SetClaimTimeout changes TASK_CLAIM_TIMEOUT (Options.ClaimTimeout) from
// the next claim on; d <= 0 restores the default 300s.
func (s *Server) SetClaimTimeout(d time.Duration) {
	if d <= 0 {
		d = 300 * time.Second
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.ClaimTimeout = d
}

// ProgressCalls returns every progress call for a task, in order.
func (s *Server) ProgressCalls(taskID string) []ProgressCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ProgressCall
	for _, p := range s.record.progress {
		if p.TaskID == taskID {
			out = append(out, p)
		}
	}
	return out
}

// TaskState is a snapshot of one task.
type TaskState struct {
	ID        string
	Type      string
	Status    string
	Params    json.RawMessage
	Result    json.RawMessage
	Error     string
	Attempts  int
	ClaimedBy string
	Progress  int
}

// Tasks returns a snapshot of every task, oldest first.
func (s *Server) Tasks() []TaskState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TaskState, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.tasks[id].state())
	}
	return out
}

// Task returns a snapshot of one task and whether it exists.
func (s *Server) Task(id string) (TaskState, bool) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return TaskState{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[n]
	if !ok {
		return TaskState{}, false
	}
	return t.state(), true
}

func (t *task) state() TaskState {
	return TaskState{
		ID: strconv.FormatInt(t.id, 10), Type: t.typ.name, Status: t.status, Params: t.params, Result: t.result,
		Error: t.errMsg, Attempts: t.attempts, ClaimedBy: t.claimedBy, Progress: t.progress,
	}
}
