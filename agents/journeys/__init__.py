"""Multi-step journeys: the file format, the calendar and the engine that runs them."""
