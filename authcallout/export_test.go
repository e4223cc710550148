package authcallout

import "time"

// HoldForwardWaits takes every slot of s's waits on other instances, as
// workers waiting on a slow instance would, until release.
func HoldForwardWaits(s *Service) (release func()) {
	n := cap(s.fwdWaits)
	for range n {
		s.fwdWaits <- struct{}{}
	}
	return func() {
		for range n {
			<-s.fwdWaits
		}
	}
}

// RecordLogin records, as s's callout does for every login it decides, a
// login of signing key key (hex) on connection cid of server serverID.
func RecordLogin(s *Service, key, serverID string, cid uint64) {
	now := s.cfg.Now()
	s.logins.begin(key, connLease{server: serverID, cid: cid, until: now.Add(time.Minute)}, now)
}
