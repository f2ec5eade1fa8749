"""The compliance report, rendered for a person: HTML from a Jinja2 template (`html`), PDF
from that HTML with WeasyPrint (`pdf`). The content is the manager's (`GET /v1/audit/report`,
`manager_api.ReportBody`); `hyperwall report` fetches it and writes the file."""
