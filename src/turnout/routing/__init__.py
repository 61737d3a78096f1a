"""Traffic control: routing policies and the pure decision of which variant serves a request."""
