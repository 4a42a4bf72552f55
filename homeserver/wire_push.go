package homeserver

// wirePush builds the push engine and its API routes.
func (s *Server) wirePush() error {
	return nil
}
