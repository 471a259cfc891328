"""Attack tests (issue 12): each tries, with a real client, to break one promise the portal makes, and fails."""
