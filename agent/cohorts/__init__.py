"""Site cohorts: studies pulled from a source for local validation and training (issue 11).

``pull`` retrieves (never making jobs: nothing is sent to the PACS), ``process`` runs the
selection, segmentation and caudate slice on each study, ``export`` writes the labelling
package a reader fills in and ``train cls`` reads.
"""
