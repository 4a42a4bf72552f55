package homeserver

// wireEphemeral builds the ephemeral engine and its API routes.
func (s *Server) wireEphemeral() error {
	return nil
}
