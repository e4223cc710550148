package authcallout

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
