package bridge

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prismq/tmbridge/bridge/taskmanager"
)

// The scout finds work for claim loops. A loop claims only what the scout
// saw pending: once per poll interval while any loop waits, the scout
// lists pending tasks (one GET /tasks?status=pending for every type) and
// gives each type's waiting loops as many claims as it saw tasks of the
// type; a loop that used its budget up asks for a look at once (more may
// be pending), one that finds none waits for the next look. An idle bridge thus makes one TaskManager request per
// poll interval whatever the number of types, and no empty claim (which
// the PHP deployment answers with a 500 and a line in its error log).
//
// A claim that timed out on another worker is claimable too, but a
// listing does not say when a task was claimed: the sweeper's listing of
// claimed tasks (once a minute) notes when it first saw each claim, and a
// claim seen for claim_timeout wakes its type. If listing fails, every
// waiting loop is woken: the bridge claims as it would without a scout.
type scout struct {
	mu      sync.Mutex
	waiting map[string][]chan int   // by type name, one per waiting loop; receives its budget
	seen    map[claimSeen]time.Time // other workers' claims, when first listed
	kick    chan struct{}           // a loop waits: look now
	// By type, the claims given to loops and those they made or gave up
	// (both only grow): the difference is claims promised, of tasks that
	// a look may still list as pending.
	given, spent map[string]int
}

// claimSeen is one claim of a task: a new claim raises attempts.
type claimSeen struct {
	id       taskmanager.ID
	attempts int64
}

func newScout() *scout {
	return &scout{waiting: map[string][]chan int{}, seen: map[claimSeen]time.Time{}, kick: make(chan struct{}, 1),
		given: map[string]int{}, spent: map[string]int{}}
}

// wait returns a channel that receives how many tasks of typ this loop
// may claim: as many as the scout saw pending (shared among the loops
// woken), so that no loop makes an empty claim. hurry asks the scout to
// look at once (the loop used up its budget: more may be pending).
func (s *scout) wait(typ string, hurry bool) <-chan int {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan int, 1)
	s.waiting[typ] = append(s.waiting[typ], ch)
	if hurry || len(s.waiting) == 1 {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return ch
}

// wake gives n tasks of typ to the loops that wait, as evenly as may be.
func (s *scout) wake(typ string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakeLocked(typ, n)
}

func (s *scout) wakeLocked(typ string, n int) {
	chs := s.waiting[typ]
	loops := min(n, len(chs))
	for i, ch := range chs[:loops] {
		ch <- n/loops + btoi(i < n%loops)
	}
	if loops > 0 {
		s.given[typ] += n
	}
	if s.waiting[typ] = chs[loops:]; len(s.waiting[typ]) == 0 {
		delete(s.waiting, typ)
	}
}

// used tells the scout that a loop of typ made n of the claims it was
// given, or gave them up.
func (s *scout) used(typ string, n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.spent[typ] += n
	s.mu.Unlock()
}

// spentSoFar returns, by type, the claims made or given up until now.
func (s *scout) spentSoFar() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.spent)
}

// wakeListed wakes each type for the tasks a look listed pending that no
// loop has been promised: claims given and not made when the look began
// (spentBefore, from spentSoFar) may be of tasks it listed, so they count
// as promised until it ended. Without this, a loop that used its budget
// up asked for a look while the others claimed theirs, and was woken
// for their tasks too: claims that came back empty.
func (s *scout) wakeListed(pending, spentBefore map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for typ, n := range pending {
		if free := n - (s.given[typ] - spentBefore[typ]); free > 0 {
			s.wakeLocked(typ, free)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// wakeAll wakes every waiting loop, each for one claim.
func (s *scout) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for typ, chs := range s.waiting {
		for _, ch := range chs {
			ch <- 1
		}
		s.given[typ] += len(chs)
		delete(s.waiting, typ)
	}
}

// waitingTypes returns the types with a loop waiting.
func (s *scout) waitingTypes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.waiting))
}

func (s *scout) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting) > 0
}

// noteClaims takes the claimed tasks listed by a sweep: a claim of
// another worker listed for longer than timeout has expired, and its type
// is woken to claim it.
func (s *scout) noteClaims(rows []taskmanager.Task, self string, timeout time.Duration, now time.Time) {
	s.mu.Lock()
	listed := map[claimSeen]bool{}
	var expired []string
	for _, t := range rows {
		if t.ClaimedBy == self {
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
		s.wake(typ, 1)
	}
}

// scoutPage is how many pending tasks one look lists.
const scoutPage = 100

// runScout looks for pending work once per poll interval while a claim
// loop waits; its first look is at once.
func (b *Bridge) runScout(ctx context.Context) {
	for ctx.Err() == nil {
		if !b.scout.idle() {
			select {
			case <-ctx.Done():
				return
			case <-b.scout.kick:
			}
		}
		spentBefore := b.scout.spentSoFar()
		rows, err := b.api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: scoutPage})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.log.Debug("cannot list pending tasks: claiming every type", "err", err)
			b.scout.wakeAll()
		default:
			pending := map[string]int{}
			for _, t := range rows {
				pending[t.Type]++
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
			b.scout.wakeListed(pending, spentBefore)
		}
		// The next look: after the poll interval, or at once when a loop
		// used up its budget (more may be pending).
		t := time.NewTimer(jitter(b.cfg.PollInterval))
		select {
		case <-ctx.Done():
		case <-b.scout.kick:
		case <-t.C:
		}
		t.Stop()
	}
}
