package httpapi

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pings.
//
// A stream that has written nothing for PingInterval gets a ": ping"
// comment. One wheel per server schedules them all: a ticker every
// PingInterval/wheelSlots moves it one slot on, and the streams in that
// slot that have been silent long enough are pinged there and then. A
// write only records the wheel's current tick in its stream (an atomic
// store), so neither a delivery nor an idle stream costs a runtime timer
// of its own, and the wheel's goroutine runs only while streams are open.
//
// A stream is in the slot of the tick at which it falls due: its last
// write's tick plus wheelSlots. When the wheel reaches it and it wrote
// since, it moves on to its new due tick; otherwise it is pinged. So no
// silence is longer than PingInterval, and a ping comes at most one tick
// early.

// wheelSlots is how many ticks one PingInterval has.
const wheelSlots = 16

// pingWheel pings the silent streams of one server.
type pingWheel struct {
	tick time.Duration // PingInterval / wheelSlots
	now  atomic.Int64  // the tick the wheel is at; writes record it

	mu      sync.Mutex
	slots   [wheelSlots + 1][]*eventWriter // by due tick, modulo the ring
	spare   []*eventWriter                 // a visited slot's array, for reuse
	n       int                            // streams in the wheel
	running bool                           // run is going
}

func newPingWheel(every time.Duration) *pingWheel {
	return &pingWheel{tick: max(every/wheelSlots, time.Microsecond)}
}

// add puts w in the wheel: it is pinged after a silence of PingInterval,
// counted from now, until remove.
func (p *pingWheel) add(w *eventWriter) {
	w.wheel = p
	w.lastTick.Store(p.now.Load())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.put(w, w.lastTick.Load()+wheelSlots)
	p.n++
	if !p.running {
		p.running = true
		go p.run(p.now.Load())
	}
}

// remove takes w out of the wheel; it is not pinged again.
func (p *pingWheel) remove(w *eventWriter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.slot < 0 {
		return
	}
	s := p.slots[w.slot]
	last := s[len(s)-1]
	s[w.pos], last.pos = last, w.pos
	s[len(s)-1] = nil
	p.slots[w.slot] = s[:len(s)-1]
	w.slot = -1
	p.n--
}

// put files w under its due tick (under mu).
func (p *pingWheel) put(w *eventWriter, due int64) {
	i := int(due % int64(len(p.slots)))
	w.slot, w.pos = i, len(p.slots[i])
	p.slots[i] = append(p.slots[i], w)
}

// run is the wheel's goroutine, started at tick from: it moves the wheel
// on as time passes (several ticks at once if it fell behind) until the
// wheel is empty.
func (p *pingWheel) run(from int64) {
	t := time.NewTicker(p.tick)
	defer t.Stop()
	start := time.Now()
	for range t.C {
		target := from + int64(time.Since(start)/p.tick)
		if k := target - int64(len(p.slots)); p.now.Load() < k {
			// More than a turn behind: one turn visits every stream.
			p.now.Store(k)
		}
		for p.now.Load() < target {
			if !p.advance() {
				return
			}
		}
	}
}

// advance moves the wheel one tick on and pings the streams due there. It
// reports false, and the goroutine ends, when no stream is left.
func (p *pingWheel) advance() bool {
	p.mu.Lock()
	if p.n == 0 {
		p.running = false
		p.mu.Unlock()
		return false
	}
	k := p.now.Add(1)
	i := int(k % int64(len(p.slots)))
	visit := p.slots[i]
	p.slots[i] = p.spare[:0]
	var due []*eventWriter
	for _, w := range visit {
		next := w.lastTick.Load() + wheelSlots
		if next <= k {
			due = append(due, w)
			next = k + wheelSlots // the ping is a write, and records k
		}
		p.put(w, next)
	}
	clear(visit)
	p.spare = visit
	p.mu.Unlock()
	for _, w := range due {
		w.pingDue()
	}
	return true
}
