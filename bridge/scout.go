package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/prismq/tmbridge/bridge/taskmanager"
)

// The scout finds work for idle claim loops. A loop whose type came up
// empty waits for the scout instead of claiming again: once per poll
// interval, while any loop waits, the scout lists pending tasks (one
// GET /tasks?status=pending for every type) and wakes the loops of the
// types listed. An idle bridge thus makes one TaskManager request per
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
	waiting map[string]chan struct{} // by type name; closed to wake
	seen    map[claimSeen]time.Time  // other workers' claims, when first listed
	kick    chan struct{}            // a loop started waiting
}

// claimSeen is one claim of a task: a new claim raises attempts.
type claimSeen struct {
	id       taskmanager.ID
	attempts int64
}

func newScout() *scout {
	return &scout{waiting: map[string]chan struct{}{}, seen: map[claimSeen]time.Time{}, kick: make(chan struct{}, 1)}
}

// wait returns a channel closed when typ may have work.
func (s *scout) wait(typ string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.waiting[typ]
	if !ok {
		ch = make(chan struct{})
		s.waiting[typ] = ch
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return ch
}

// wake wakes the loop of typ if it waits.
func (s *scout) wake(typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, ok := s.waiting[typ]; ok {
		close(ch)
		delete(s.waiting, typ)
	}
}

// wakeAll wakes every waiting loop.
func (s *scout) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for typ, ch := range s.waiting {
		close(ch)
		delete(s.waiting, typ)
	}
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
		s.wake(typ)
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
				continue
			}
		}
		rows, err := b.api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: scoutPage})
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.log.Debug("cannot list pending tasks: claiming every type", "err", err)
			b.scout.wakeAll()
		default:
			for _, t := range rows {
				b.scout.wake(t.Type)
			}
		}
		sleep(ctx, jitter(b.cfg.PollInterval))
	}
}
