"""Mitogen for Ansible's linear strategy, found through this repository's strategy_plugins path.

`ANSIBLE_STRATEGY=mitogen_linear` runs modules inside one persistent Python interpreter per
host instead of copying and starting each module over the connection (docker exec, SSH),
which cuts the per-task cost several times over. The real plugin lives in the `mitogen`
package (requirements.txt); this file makes it loadable without a venv-specific path.

Plays that run only on the controller (`connection: local`, e.g. Molecule's create and destroy
playbooks) keep Ansible's own linear strategy: they gain nothing from Mitogen, and their
`async`/`async_status` polling never saw the job finish under Mitogen 0.3.54 with
ansible-core 2.19.
"""

from ansible.plugins.strategy.linear import StrategyModule as _AnsibleLinear
from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule as _MitogenLinear


class StrategyModule(_MitogenLinear):
    def run(self, iterator, play_context, result=0):
        if iterator._play.connection == "local":
            return _AnsibleLinear.run(self, iterator, play_context)
        return super().run(iterator, play_context)
