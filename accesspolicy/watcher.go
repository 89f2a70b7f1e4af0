package accesspolicy

import (
	"context"
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is how often a [Watcher] looks at its file.
const DefaultWatchInterval = 10 * time.Second

// WatcherOptions configure a [Watcher].
type WatcherOptions struct {
	// Interval between two looks at the file (default [DefaultWatchInterval]).
	Interval time.Duration
	// OnReload is called after a changed file was parsed and took effect.
	OnReload func(*Policy)
	// OnError is called when a changed file cannot be read or is invalid;
	// the previous policy stays in effect. It is called once per distinct
	// content, not at every look.
	OnError func(error)
}

// Watcher holds the policy of one file and re-reads the file when its
// content changes. [Watcher.Policy] is an atomic load, safe from any
// goroutine.
type Watcher struct {
	name string
	o    WatcherOptions
	cur  atomic.Pointer[Policy]

	mu   sync.Mutex // serialises Check
	seen [sha256.Size]byte
	bad  bool // seen is content that failed to parse (or a read error)
}

// NewWatcher loads the policy file name; an invalid file is an error (exit
// 2 at start). Call [Watcher.Run] to follow changes.
func NewWatcher(name string, o WatcherOptions) (*Watcher, error) {
	if o.Interval <= 0 {
		o.Interval = DefaultWatchInterval
	}
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	p, err := Parse(b)
	if err != nil {
		return nil, &fileError{name, err}
	}
	w := &Watcher{name: name, o: o, seen: sha256.Sum256(b)}
	w.cur.Store(p)
	return w, nil
}

// Policy returns the policy in effect.
func (w *Watcher) Policy() *Policy { return w.cur.Load() }

// Run looks at the file every Interval until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check()
		}
	}
}

// Check looks at the file once: when its content differs from the last
// seen, it is parsed and, if valid, takes effect. It reports whether a new
// policy took effect and the error of a failed read or parse (also passed
// to OnError when the content is new).
func (w *Watcher) Check() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, err := readFile(w.name)
	if err != nil {
		// A missing file during a ConfigMap update is brief; report a
		// read error once until the file reads again.
		if !w.bad || w.seen != [sha256.Size]byte{} {
			w.bad, w.seen = true, [sha256.Size]byte{}
			w.report(err)
		}
		return false, err
	}
	sum := sha256.Sum256(b)
	if sum == w.seen {
		if w.bad {
			return false, errUnchangedBad
		}
		return false, nil
	}
	w.seen = sum
	p, err := Parse(b)
	if err != nil {
		w.bad = true
		err = &fileError{w.name, err}
		w.report(err)
		return false, err
	}
	w.bad = false
	w.cur.Store(p)
	if w.o.OnReload != nil {
		w.o.OnReload(p)
	}
	return true, nil
}

func (w *Watcher) report(err error) {
	if w.o.OnError != nil {
		w.o.OnError(err)
	}
}

// fileError names the file of a parse error and keeps the rule errors.
type fileError struct {
	name string
	err  error
}

func (e *fileError) Error() string { return e.name + ": " + e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

type constError string

func (e constError) Error() string { return string(e) }

// errUnchangedBad: the file still holds the content that failed to load.
const errUnchangedBad = constError("the policy file still holds the invalid content reported before; the previous policy stays in effect")
