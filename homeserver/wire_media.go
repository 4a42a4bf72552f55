package homeserver

// wireMedia builds the media engine and its API routes.
func (s *Server) wireMedia() error {
	return nil
}
