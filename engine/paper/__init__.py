"""Paper accounts: USD-M isolated-margin accounts, the risk manager, the paper broker (fills and
triggers), the leaderboard and its statistics, and the cycle's risk/execution/PnL steps.

May import: the core and `engine.market`.
"""
