"""HTTP: the control API's second transport (`/api/v1`), the dashboard, `/metrics`."""
