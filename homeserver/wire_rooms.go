package homeserver

// wireRooms builds the rooms engine and its API routes.
func (s *Server) wireRooms() error {
	return nil
}
