package homeserver

// wireFederation builds the federation engine and its API routes.
func (s *Server) wireFederation() error {
	return nil
}
