"""Reports: one versioned schema (``schema.json``), pure renderers, saving, and the CI gate.

- ``schema.load_report(path)`` / ``schema.validate_report(report)``: read and check report.json.
- ``markdown.render_markdown``, ``html.render_html``, ``junit.render_junit``: report dict -> str.
- ``save.save_report(report, out_dir)``: write report.json, report.md and report.html atomically.
- ``policy.load_policy(path)`` and ``gate.evaluate(report, policy, baseline)``: the CI gate.
- ``command``: the ``report`` and ``gate`` commands.
"""
