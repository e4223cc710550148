package authcallout

import (
	"testing"
	"time"
)

// A login that a revocation takes to close gives back its place among its
// handle's logins too: until it is gone it must not count against the cap
// (defect: it counted for its whole auth timeout, where the server cannot
// tell kezd it closed, and a client logging in again with its new key near
// the cap was refused).
func TestTakenLoginsLeaveTheCap(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var f inflight
	unknown := func(string, uint64) (bool, bool) { return false, false } // an external server: cannot tell
	old := connLease{server: "S1", handle: "alice", cid: 7, until: now.Add(time.Minute)}
	f.begin("oldkey", old, now)
	f.reserve(old, now)
	other := connLease{server: "S1", handle: "alice", cid: 8, until: now.Add(time.Minute)}
	f.begin("newkey", other, now)
	f.reserve(other, now)
	if n := f.reserved("alice", 1<<60, nil, unknown, now); n != 2 {
		t.Fatalf("reserved = %d before the revocation, want 2", n)
	}
	if got := f.take("alice", []string{"oldkey"}, now); len(got) != 1 || got[0].cid != 7 {
		t.Fatalf("take = %+v, want the login of cid 7", got)
	}
	if n := f.reserved("alice", 1<<60, nil, unknown, now); n != 1 {
		t.Fatalf("reserved = %d after the old key's login was taken, want 1 (the new key's)", n)
	}
}
