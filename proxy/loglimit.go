package proxy

import (
	"sync"
	"time"
)

// logLimiter bounds the WARN lines a client can make kvproxy write: per
// diagnosis code, the first is written, then at most one per interval, which
// says how many were suppressed since the last. Metrics still count every
// diagnosis.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	codes    map[string]*logState // bounded: one entry per diagnosis code
}

type logState struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, codes: map[string]*logState{}}
}

// allow reports whether a line for code may be written now, and how many
// were suppressed before it.
func (l *logLimiter) allow(code string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.codes[code]
	if s == nil {
		l.codes[code] = &logState{last: now}
		return true, 0
	}
	if now.Sub(s.last) < l.interval {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	return true, n
}
