#!/usr/bin/env bash
# Set everything up and open the dashboard (built-in demo dataset, bundled model) at http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh requirements.txt
exec .venv/bin/python -m streamlit run streamlit_app.py "$@"
