package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/prismq/tmbridge/taskmanager"
)

// The scout finds work for claim loops. A loop claims only what the scout
// saw pending: once per poll interval while any loop waits, the scout
// lists pending tasks (one GET /tasks?status=pending for every type) and
// allows each type as many claims as it saw tasks of the type that no
// claim allowed before is for. The type's loops take those claims one at
// a time, so that all of them claim while any are left; a loop that took
// the last one asks for a look at once (more may be pending), one whose
// claim came back empty waits for the next look. An idle bridge thus
// makes one TaskManager request per poll interval whatever the number of
// types, and no empty claim (which the PHP deployment answers with a 500
// and a line in its error log).
//
// A claim that timed out on another worker is claimable too, but a
// listing does not say when a task was claimed: the sweeper's listing of
// claimed tasks (every minute, or every half claim_timeout when that is
// shorter, never more often than poll_interval) notes when it first saw each claim, and a
// claim seen for claim_timeout wakes its type. So does a claim of this
// worker that no run of this bridge holds (its run closed without
// reporting: terminated in Temporal Web), or whose run this bridge found
// rather than claimed for (open at start, or signalled by a sweep): its
// time is unknown. The claims it made for its open runs it renews itself
// (renewAt). If listing fails, every
// waiting loop is woken: the bridge claims as it would without a scout.
type scout struct {
	mu    sync.Mutex
	types map[string]*typeClaims  // by type name
	seen  map[claimSeen]time.Time // claims no run of this bridge holds, when first listed
	kick  chan struct{}           // a loop began to wait: the scout looks, then every poll interval
	hurry chan struct{}           // a loop took the last claim allowed after one that took a task: look now
	// listing: GET /tasks?status=pending fails (then every type claims
	// once per poll interval: on PHP, a 500 and an error-log line each).
	listing trouble
}

// typeClaims is the scout's account of the claims of one type. given −
// made − dropped are the claims promised: allowed, and not yet made, so
// that a look does not allow them again for the tasks they are for.
type typeClaims struct {
	waiting []chan struct{} // loops waiting to claim, one claim each
	free    int             // claims allowed that no loop took yet
	given   int             // claims allowed, in all
	made    int             // claim calls made, in all
	dropped int             // claims allowed and given up unmade, in all
}

// claimSeen is one claim of a task: a new claim raises attempts.
type claimSeen struct {
	id       taskmanager.ID
	attempts int64
}

func newScout() *scout {
	return &scout{types: map[string]*typeClaims{}, seen: map[claimSeen]time.Time{}, kick: make(chan struct{}, 1), hurry: make(chan struct{}, 1)}
}

func (s *scout) typ(name string) *typeClaims {
	tc := s.types[name]
	if tc == nil {
		tc = &typeClaims{}
		s.types[name] = tc
	}
	return tc
}

// next returns a channel that is ready when this loop may make one claim
// of typ. hurry asks the scout to look at once when no claim is left (the
// loop's last claim took a task: more may be pending).
func (s *scout) next(typ string, hurry bool) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	tc := s.typ(typ)
	if tc.free > 0 {
		tc.free--
		ch <- struct{}{}
		return ch
	}
	first := !s.waitingLocked()
	tc.waiting = append(tc.waiting, ch)
	switch {
	case hurry:
		notify(s.hurry)
	case first:
		notify(s.kick)
	}
	return ch
}

// drain takes the signal waiting on ch, if any.
func drain(ch chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

// notify sends on ch unless a signal waits there already.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// made tells the scout that a loop made the claim it took (whatever the
// answer: a claim whose answer was lost may have taken a task).
func (s *scout) made(typ string) {
	s.mu.Lock()
	s.typ(typ).made++
	s.mu.Unlock()
}

// empty tells the scout that a loop's claim came back empty: what the
// scout saw is gone (another worker was first), and the claims left
// for the type are dropped.
func (s *scout) empty(typ string) {
	s.mu.Lock()
	tc := s.typ(typ)
	tc.made++
	tc.dropped += tc.free
	tc.free = 0
	s.mu.Unlock()
}

// unused gives back a claim a loop took and does not make (it stops).
func (s *scout) unused(typ string) {
	s.mu.Lock()
	s.typ(typ).dropped++
	s.mu.Unlock()
}

// wake allows up to n claims of typ to the loops that wait, one each.
// Unlike a look's, these are not kept for loops that come later: they are
// for a task the scout cannot see pending (a claim that timed out), and
// what wakes for one may wake for it again.
func (s *scout) wake(typ string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc := s.types[typ]
	if tc == nil {
		return // no loop of it ever waited: a type this bridge does not serve
	}
	s.allowLocked(typ, min(n, len(tc.waiting)))
}

func (s *scout) allowLocked(typ string, n int) {
	tc := s.typ(typ)
	tc.given += n
	for n > 0 && len(tc.waiting) > 0 {
		tc.waiting[0] <- struct{}{}
		tc.waiting = tc.waiting[1:]
		n--
	}
	tc.free += n
}

// madeSoFar returns, by type, the claims made until now.
func (s *scout) madeSoFar() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.types))
	for name, tc := range s.types {
		out[name] = tc.made
	}
	return out
}

// wakeListed allows each type claims for the tasks a look listed pending
// that no claim is promised to: claims allowed and not made when the look
// began (madeBefore, from madeSoFar) may be for tasks it listed, so they
// count as promised until it ended. Without this, a loop that had taken
// the last claim asked for a look while the others made theirs, and was
// allowed their tasks too: claims that came back empty.
func (s *scout) wakeListed(pending, madeBefore map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for typ, n := range pending {
		tc := s.typ(typ)
		if free := n - (tc.given - madeBefore[typ] - tc.dropped); free > 0 {
			s.allowLocked(typ, free)
		}
	}
}

// wakeAll wakes every waiting loop, each for one claim.
func (s *scout) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, tc := range s.types {
		s.allowLocked(name, len(tc.waiting))
	}
}

// waitingTypes returns the types with a loop waiting.
func (s *scout) waitingTypes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for name, tc := range s.types {
		if len(tc.waiting) > 0 {
			names = append(names, name)
		}
	}
	return names
}

// anyWaiting reports whether a loop waits for claims.
func (s *scout) anyWaiting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitingLocked()
}

func (s *scout) waitingLocked() bool {
	for _, tc := range s.types {
		if len(tc.waiting) > 0 {
			return true
		}
	}
	return false
}

// noteClaims takes the claimed tasks listed by a sweep: a claim listed
// for longer than timeout has expired, and its type is woken to claim it
// while the bridge has room for a claim.
// Claims that held reports are left out: this bridge's own claims that
// it renews (renewAt).
func (s *scout) noteClaims(rows []taskmanager.Task, held func(taskmanager.Task) bool, timeout time.Duration, now time.Time, room func() bool) {
	s.mu.Lock()
	listed := map[claimSeen]bool{}
	var expired []string
	for _, t := range rows {
		if held(t) {
			continue
		}
		k := claimSeen{t.ID, int64(t.Attempts)}
		listed[k] = true
		first, ok := s.seen[k]
		if !ok {
			s.seen[k] = now
		} else if now.Sub(first) >= timeout {
			expired = append(expired, t.Type)
		}
	}
	for k := range s.seen {
		if !listed[k] {
			delete(s.seen, k)
		}
	}
	s.mu.Unlock()
	for _, typ := range expired {
		if !room() {
			return // the next sweep wakes them, once there is room
		}
		s.wake(typ, 1)
	}
}

// seenSince notes a claim of this worker as listed since at (when it was
// made): one whose renewal stopped trying. The next sweep that lists it
// past the claim timeout wakes its type.
func (s *scout) seenSince(id taskmanager.ID, attempts int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := claimSeen{id, int64(attempts)}
	if first, ok := s.seen[k]; !ok || at.Before(first) {
		s.seen[k] = at
	}
}

// scoutPage is how many pending tasks one look lists.
const scoutPage = 100

// runScout looks for pending work once per poll interval while a claim
// loop waits; its first look is at once.
func (b *Bridge) runScout(ctx context.Context) {
	served := make(map[string]bool, len(b.types)) // others' pending tasks are not counted
	for _, t := range b.types {
		served[t.Name] = true
	}
	for ctx.Err() == nil {
		if !b.scout.anyWaiting() { // every loop is claiming: nothing to look for yet
			select {
			case <-ctx.Done():
				return
			case <-b.scout.kick:
			case <-b.scout.hurry:
			}
		}
		// This look answers what asked for one so far.
		drain(b.scout.kick)
		drain(b.scout.hurry)
		madeBefore := b.scout.madeSoFar()
		rows, err := b.api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: scoutPage})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.scout.listing.failed(b.log, "cannot list pending tasks: claiming every type once per poll interval", "err", err)
			b.scout.wakeAll()
			// As without a scout: each loop claims once per poll interval,
			// at once again only after a claim that took a task. (Its
			// loops' empty claims must not ask for the next look at once:
			// a failing listing would make them claim in a tight loop.)
			sleep(ctx, taskmanager.RetryAfter(err))
			t := time.NewTimer(jitter(b.cfg.PollInterval))
			select {
			case <-ctx.Done():
			case <-b.scout.hurry:
			case <-t.C:
			}
			t.Stop()
			continue
		default:
			b.scout.listing.ok(b.log, "pending tasks listed again: claiming only the types that have some")
			pending := map[string]int{}
			for _, t := range rows {
				if served[t.Type] {
					pending[t.Type]++
				}
			}
			if len(rows) == scoutPage {
				// A full page may hide older tasks of a waiting type behind
				// newer ones of others: ask for each such type alone.
				for _, typ := range b.scout.waitingTypes() {
					if pending[typ] > 0 {
						continue
					}
					more, err := b.api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusPending, Type: typ, Limit: ClaimsPerType})
					if err != nil {
						more = make([]taskmanager.Task, 1) // unsure: claim and see
					}
					// PHP filters with LIKE: "send_email" lists "send-email"
					// too. Only the type's own tasks count.
					for _, t := range more {
						if t.Type == typ || t.Type == "" {
							pending[typ]++
						}
					}
				}
			}
			b.scout.wakeListed(pending, madeBefore)
		}
		// The next look: after the poll interval, or at once when a loop
		// begins to wait, or took the last claim allowed after a claim
		// that took a task (more may be pending).
		t := time.NewTimer(jitter(b.cfg.PollInterval))
		select {
		case <-ctx.Done():
		case <-b.scout.kick:
		case <-b.scout.hurry:
		case <-t.C:
		}
		t.Stop()
	}
}
