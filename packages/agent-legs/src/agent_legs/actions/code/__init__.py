"""The ``code`` action family (see ``agent_legs.actions`` for the layout every family shares)."""
