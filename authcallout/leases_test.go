package authcallout_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/internal/teststore"
)

// recordingLeases is the deployment's leases in memory (as postgres.Leases
// counts them per handle), recording what the callout asks of them.
type recordingLeases struct {
	mu       sync.Mutex
	next     int64
	open     map[int64]string // handle by lease id
	perIPs   []int            // of every acquire
	releases [][]int64        // of every ReleaseLeases call
}

func (l *recordingLeases) AcquireLease(_ context.Context, kind, handle, ip string, perHandle, perIP int) (int64, int, int, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.perIPs = append(l.perIPs, perIP)
	n := 0
	for _, h := range l.open {
		if h == handle {
			n++
		}
	}
	if n >= perHandle {
		return 0, n, 0, false, nil
	}
	l.next++
	l.open[l.next] = handle
	return l.next, n, 0, true, nil
}

func (l *recordingLeases) ReleaseLeases(_ context.Context, ids []int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releases = append(l.releases, slices.Sorted(slices.Values(ids)))
	for _, id := range ids {
		delete(l.open, id)
	}
	return nil
}

func (l *recordingLeases) state() (open []int64, perIPs []int, releases [][]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.open {
		open = append(open, id)
	}
	slices.Sort(open)
	return open, slices.Clone(l.perIPs), slices.Clone(l.releases)
}

// The leases of a stopped callout's logins stay taken while their
// connections are open, and ReleaseLeases (which kezd serve calls once the
// broker has closed them) gives them all back in one call (defect: Stop gave
// them back one DELETE at a time, before the broker closed the connections,
// so that other instances could admit more meanwhile). The logins' leases
// ask for no per-IP cap (defect: MaxInt32, which still locked and counted
// the address's leases).
func TestLeasesGivenBackTogetherAfterStop(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	n := startEmbedded(t, k, authTimeout)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	leases := &recordingLeases{open: map[int64]string{}}
	svc := startCallout(t, n.url, k, db, authcallout.Config{MaxConnsPerHandle: 3, Conns: n.broker, Leases: leases})

	login(t, n.url, alice)
	login(t, n.url, alice)
	open, perIPs, releases := leases.state()
	if len(open) != 2 || !slices.Equal(perIPs, []int{0, 0}) || len(releases) != 0 {
		t.Fatalf("after two logins: open %v, per-IP caps asked %v, releases %v; want 2 open, caps [0 0], none released", open, perIPs, releases)
	}

	svc.Stop()
	if _, _, releases := leases.state(); len(releases) != 0 {
		t.Fatalf("Stop gave back leases of open connections: %v", releases)
	}
	svc.ReleaseLeases()
	if _, _, releases := leases.state(); len(releases) != 1 || !slices.Equal(releases[0], open) {
		t.Fatalf("ReleaseLeases: calls %v, want one with %v", releases, open)
	}
	svc.ReleaseLeases() // again: nothing left to give back
	if _, _, releases := leases.state(); len(releases) != 1 {
		t.Fatalf("a second ReleaseLeases released again: %v", releases)
	}
}
