package httpapi

// OpenStreams is how many SSE streams are open on this instance.
func (s *Server) OpenStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams.open
}

// OpenPolls is how many long-polls are waiting on this instance.
func (s *Server) OpenPolls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls.open
}

// SlowStreams is how many streams this instance has ended since start
// because their readers did not take a catch-up page by its drain deadline
// (the clients resume from their Last-Event-ID).
func (s *Server) SlowStreams() int64 { return s.slowStreams.Load() }

// CapNames are the stream and long-poll caps, as CapRefusals names them.
var CapNames = []string{
	"streams_per_handle", "streams_per_ip", "streams_per_instance",
	"long_polls_per_handle", "long_polls_per_ip", "long_polls_per_instance",
}

// CapRefusals is how many streams or long-polls the cap called name (one
// of CapNames) has refused since start.
func (s *Server) CapRefusals(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []*caps{s.streams, s.polls} {
		if n, ok := k.refused[name]; ok {
			return n
		}
	}
	return 0
}
