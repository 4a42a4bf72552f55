package homeserver

// wireSync builds the sync engine and its API routes.
func (s *Server) wireSync() error {
	return nil
}
