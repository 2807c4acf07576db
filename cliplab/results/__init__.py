"""Study results: the contract every study returns (result.py), the results store and the machine exports."""
