package proxy

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx is a context that ends at a deadline and carries nothing
// else, whose timer is made only when something waits on it. The hot path
// (a token held, no retry wait) never does, so a request costs no timer
// and no goroutine; context.WithDeadline under the request's context cost
// both on every request.
type deadlineCtx struct {
	deadline time.Time
	once     sync.Once
	done     chan struct{}
	timer    *time.Timer
}

func newDeadlineCtx(d time.Time) *deadlineCtx { return &deadlineCtx{deadline: d} }

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Done() <-chan struct{} {
	c.once.Do(func() {
		c.done = make(chan struct{})
		if d := time.Until(c.deadline); d > 0 {
			c.timer = time.AfterFunc(d, func() { close(c.done) })
		} else {
			close(c.done)
		}
	})
	return c.done
}

func (c *deadlineCtx) Err() error {
	select {
	case <-c.Done():
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func (c *deadlineCtx) Value(any) any { return nil }

// stop releases the timer, if one was made.
func (c *deadlineCtx) stop() {
	c.once.Do(func() {}) // no timer may start after this
	if c.timer != nil {
		c.timer.Stop()
	}
}
