"""Assets of the playbook tests (tests/test_playbooks.py) and bench/ansible.py."""
